/*
 * The per-task fail-nth file and the fake debugfs, through the shim, as the kernel selftest's
 * iommufd_fail_nth uses them: arm with a write, read back "N\n", the count is consumed by the
 * injection sites of the task's next calls, and "0\n" means an injection fired.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "iommusim_test.h"

static void expect_value(int fd, const char *want)
{
	char buf[32] = {0};
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	if (n != (ssize_t)strlen(want) || memcmp(buf, want, (size_t)n) != 0)
		FAIL("fail-nth reads '%.*s' (%zd), want '%s'", n > 0 ? (int)n : 0, buf, n, want);
}

static void arm(int fd, const char *text)
{
	EXPECT_EQ(strlen(text), pwrite(fd, text, strlen(text), 0));
}

int main(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/fail-nth", getpid());
	int nth = open(path, O_RDWR);
	if (nth < 0)
		FAIL("open %s: %s", path, strerror(errno));
	expect_value(nth, "0\n");

	/* The open of /dev/iommu is a site: armed at 1 it fails with ENOMEM and reads back 0. */
	arm(nth, "1");
	expect_value(nth, "1\n");
	EXPECT_ERRNO(ENOMEM, open("/dev/iommu", O_RDWR));
	expect_value(nth, "0\n");

	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	/* DESTROY's object lookup is a site: armed at 2, one call consumes one. */
	arm(nth, "2");
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 1));
	expect_value(nth, "1\n");
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 1));
	expect_value(nth, "0\n");
	/* Unarmed, nothing changes. */
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 1));
	expect_value(nth, "0\n");

	/* kstrtouint: base prefixes, one newline, ranges. */
	arm(nth, "0x10\n");
	expect_value(nth, "16\n");
	arm(nth, "010");
	expect_value(nth, "8\n");
	EXPECT_ERRNO(EINVAL, pwrite(nth, "abc", 3, 0));
	EXPECT_ERRNO(EINVAL, pwrite(nth, "-1", 2, 0));
	EXPECT_ERRNO(ERANGE, pwrite(nth, "4294967296", 10, 0));
	{
		void *volatile nowhere = NULL; /* hides the NULL from the compiler's checks */
		EXPECT_ERRNO(EFAULT, pwrite(nth, nowhere, 4, 0));
		EXPECT_ERRNO(EFAULT, pread(nth, nowhere, 4, 0));
	}
	expect_value(nth, "8\n");
	/* read() follows the file position; pread at an offset serves the tail. */
	{
		char c[4] = {0};
		EXPECT_EQ(1, read(nth, c, 1));
		EXPECT_EQ(1, read(nth, c + 1, 1));
		EXPECT_EQ(0, read(nth, c + 2, 1));
		if (c[0] != '8' || c[1] != '\n')
			FAIL("read() gave '%s'", c);
		EXPECT_EQ(1, pread(nth, c, 4, 1));
		EXPECT_EQ(0, pread(nth, c, 4, 2));
	}
	EXPECT_ERRNO(ENOTTY, ioctl(nth, 0x5401, 0));
	arm(nth, "0");
	expect_value(nth, "0\n");
	EXPECT_EQ(0, close(nth));

	/* The thread's own file names the same task. */
	{
		int self = open("/proc/thread-self/fail-nth", O_RDWR);
		if (self < 0)
			FAIL("open thread-self: %s", strerror(errno));
		arm(self, "5");
		snprintf(path, sizeof(path), "/proc/%d/task/%ld/fail-nth", getpid(),
			 (long)syscall(SYS_gettid));
		int other = open(path, O_RDONLY);
		if (other < 0)
			FAIL("open %s: %s", path, strerror(errno));
		expect_value(other, "5\n");
		EXPECT_ERRNO(EBADF, write(other, "1", 1));
		arm(self, "0");
		close(other);
		close(self);
		EXPECT_ERRNO(ENOENT, open("/proc/self/task/999999999/fail-nth", O_RDWR));
	}

	/* The debugfs knobs the selftest writes before it sweeps. */
	{
		DIR *dbg = opendir("/sys/kernel/debug/");
		if (!dbg)
			FAIL("opendir debugfs: %s", strerror(errno));
		int knob = openat(dirfd(dbg), "failslab/ignore-gfp-wait", O_WRONLY);
		if (knob < 0)
			FAIL("openat failslab knob: %s", strerror(errno));
		EXPECT_EQ(1, write(knob, "N", 1));
		close(knob);
		int fails = 0;
		struct dirent *de;
		while ((de = readdir(dbg)))
			fails += strncmp(de->d_name, "fail", 4) == 0;
		closedir(dbg);
		if (fails < 2)
			FAIL("debugfs lists %d fail* directories", fails);
	}
	close(fd);
	printf("ok\n");
	return 0;
}
