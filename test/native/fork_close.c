/*
 * fd lifetimes through the shim: a forked child shares the parent's context and its close
 * does not release it; dup keeps it alive; the last close releases it before close() returns
 * (the daemon's trace shows the release ahead of the next open). Prints the stages it passed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iommusim_test.h"

int main(void)
{
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	/* ENOENT (not EBADF) proves the context is alive: the lookup reached its object table. */
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 4242));

	pid_t child = fork();
	if (child < 0)
		FAIL("fork");
	if (child == 0) {
		/* The child talks to the same context over its own control connection. */
		if (destroy_id(fd, 4242) != -1 || errno != ENOENT)
			_exit(10);
		if (close(fd) != 0)
			_exit(11);
		_exit(0);
	}
	int status;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		FAIL("child failed: status 0x%x", status);
	printf("child-closed\n");
	fflush(stdout);
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 4242)); /* still the parent's */

	int copy = dup(fd);
	if (copy < 0)
		FAIL("dup");
	EXPECT_EQ(0, close(fd));
	EXPECT_ERRNO(ENOENT, destroy_id(copy, 4242)); /* the dup holds it */
	printf("dup-alive\n");
	fflush(stdout);
	EXPECT_EQ(0, close(copy)); /* the last close */

	int again = open("/dev/iommu", O_RDWR);
	if (again < 0)
		FAIL("reopen: %s", strerror(errno));
	EXPECT_ERRNO(ENOENT, destroy_id(again, 1));
	EXPECT_EQ(0, close(again));
	printf("ok\n");
	return 0;
}
