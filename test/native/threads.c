/*
 * Threads sharing one iommufd through the shim: calls from several threads at once all get
 * their answers (the shim serialises them on the process's control connection), and fail-nth
 * is per task: a count one thread arms is consumed by that thread's calls only.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "iommusim_test.h"

#define THREADS 4
#define CALLS 200

static int fd;
static int failures;

static void *hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < CALLS; i++) {
		if (destroy_id(fd, 1000 + (uint32_t)i) != -1 || errno != ENOENT)
			__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *armed(void *arg)
{
	char path[64], buf[16] = {0};
	(void)arg;
	snprintf(path, sizeof(path), "/proc/thread-self/fail-nth");
	int nth = open(path, O_RDWR);
	if (nth < 0 || pwrite(nth, "3", 1, 0) != 1)
		__atomic_add_fetch(&failures, 1000, __ATOMIC_RELAXED);
	/* Other threads' calls run meanwhile; only this thread's own consume the count. */
	usleep(20000);
	if (pread(nth, buf, sizeof(buf), 0) != 2 || strcmp(buf, "3\n") != 0)
		__atomic_add_fetch(&failures, 100, __ATOMIC_RELAXED);
	destroy_id(fd, 1);
	if (pread(nth, buf, sizeof(buf), 0) != 2 || strcmp(buf, "2\n") != 0)
		__atomic_add_fetch(&failures, 100, __ATOMIC_RELAXED);
	pwrite(nth, "0", 1, 0);
	close(nth);
	return NULL;
}

int main(void)
{
	pthread_t t[THREADS + 1];
	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	pthread_create(&t[THREADS], NULL, armed, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, hammer, NULL);
	for (int i = 0; i <= THREADS; i++)
		pthread_join(t[i], NULL);
	if (failures)
		FAIL("%d failures", failures);
	close(fd);
	printf("ok\n");
	return 0;
}
