/*
 * A process whose memory the daemon's procfs view is tested against. It sets up one mapping of
 * each kind, prints their addresses as one JSON line, forks a child that keeps the same
 * mappings (also printed), and then obeys one-letter commands on stdin:
 *   c  drop CAP_IPC_LOCK from the effective set     q  exit (the child is killed)
 *   m  map a fresh read-write page, print its address
 *   r  make that page read-only, print "ro"
 * Memory is filled with known bytes: buffer byte i of the private buffer is (i * 7) & 0xff.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static void drop_ipc_lock(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) != 0)
		return;
	d[0].effective &= ~(1u << CAP_IPC_LOCK);
	syscall(SYS_capset, &h, d);
}

int main(void)
{
	struct rlimit rl;
	getrlimit(RLIMIT_MEMLOCK, &rl);
	rl.rlim_cur = 1 << 20; /* below any usual hard limit */
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
		rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_MEMLOCK, &rl);

	uint8_t *priv = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			     -1, 0);
	uint8_t *shared = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint8_t *ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *none = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* Two pages with the second unmapped: a hole right after the first. */
	uint8_t *holed = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			      -1, 0);
	int mfd = (int)syscall(SYS_memfd_create, "memtarget", 0);
	if (mfd < 0 || ftruncate(mfd, 4 * PAGE) != 0)
		return 1;
	uint8_t *mem = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	int exe = open("/proc/self/exe", O_RDONLY);
	uint8_t *file = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, exe, 0);
	if (priv == MAP_FAILED || shared == MAP_FAILED || ro == MAP_FAILED || none == MAP_FAILED ||
	    holed == MAP_FAILED || mem == MAP_FAILED || file == MAP_FAILED)
		return 1;
	munmap(holed + PAGE, PAGE);
	for (int i = 0; i < 4 * PAGE; i++) {
		priv[i] = (uint8_t)(i * 7);
		shared[i] = (uint8_t)(i * 3);
		mem[i] = (uint8_t)(i * 5);
	}
	memset(holed, 0x11, PAGE);
	/* A write: page 0 of the private file mapping becomes an anonymous copy. */
	*(volatile uint8_t *)&file[0] = file[0];
	volatile uint8_t touch = file[PAGE]; /* page 1 stays the file's page */
	(void)touch;

	pid_t child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent, however it ends */
		if (getppid() == 1)
			return 0;
		for (;;)
			pause(); /* the parent kills it when told to quit */
	}
	printf("{\"pid\":%d,\"child\":%d,\"priv\":%lu,\"shared\":%lu,\"ro\":%lu,\"none\":%lu,"
	       "\"holed\":%lu,\"memfd\":%d,\"mem\":%lu,\"file\":%lu}\n",
	       getpid(), child, (unsigned long)priv, (unsigned long)shared, (unsigned long)ro,
	       (unsigned long)none, (unsigned long)holed, mfd, (unsigned long)mem,
	       (unsigned long)file);
	fflush(stdout);
	uint8_t *fresh = NULL;
	for (;;) {
		char c;
		if (read(0, &c, 1) != 1 || c == 'q')
			break;
		if (c == 'm') {
			fresh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
				     0);
			memset(fresh, 0x42, PAGE);
			printf("%lu\n", (unsigned long)fresh);
			fflush(stdout);
		}
		if (c == 'r' && fresh) {
			mprotect(fresh, PAGE, PROT_READ);
			printf("ro\n");
			fflush(stdout);
		}
		if (c == 'c') {
			drop_ipc_lock();
			printf("dropped\n");
			fflush(stdout);
		}
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}
