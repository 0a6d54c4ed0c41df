/*
 * /proc/<pid>/status through the shim: VmPin shows the pages iommufd pinned for this process
 * (read with fopen, as the kernel selftest does, and with open/read), a forked child sees its
 * parent's figure through /proc/<ppid>/status and its own as zero, and unmapping brings it back.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iommusim_test.h"

/* The "VmPin:" figure in kB of a status file read through stdio, or -1. */
static long vm_pin_fopen(const char *path)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPin: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* The same through open and read. */
static long vm_pin_read(const char *path)
{
	char buf[8192];
	ssize_t n, len = 0;
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	while ((n = read(fd, buf + len, sizeof(buf) - 1 - (size_t)len)) > 0)
		len += n;
	close(fd);
	buf[len] = 0;
	const char *at = strstr(buf, "\nVmPin:");
	return at ? strtol(at + 7, NULL, 10) : -1;
}

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	char self_path[64];
	snprintf(self_path, sizeof(self_path), "/proc/%d/status", getpid());
	long before = vm_pin_fopen("/proc/self/status");
	if (before < 0)
		FAIL("no VmPin line before any pin");

	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	struct t_ioas_alloc alloc = {.size = sizeof(alloc)};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_ALLOC, &alloc));
	struct t_test_cmd md = {.size = sizeof(md), .op = IOMMU_TEST_OP_MOCK_DOMAIN,
				.id = alloc.out_ioas_id};
	EXPECT_EQ(0, ioctl(fd, IOMMU_TEST_CMD, &md));

	size_t len = 2 * (size_t)page;
	uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		FAIL("mmap");
	memset(buf, 1, len);
	struct t_ioas_map map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE,
		.ioas_id = alloc.out_ioas_id,
		.user_va = (uintptr_t)buf,
		.length = len,
	};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_MAP, &map));
	long want = before + (long)len / 1024;
	EXPECT_EQ(want, vm_pin_fopen("/proc/self/status"));
	EXPECT_EQ(want, vm_pin_read(self_path));
	EXPECT_EQ(want, vm_pin_read("/proc/thread-self/status"));

	pid_t child = fork();
	if (child == 0) {
		char parent_path[64];
		snprintf(parent_path, sizeof(parent_path), "/proc/%d/status", getppid());
		EXPECT_EQ(want, vm_pin_fopen(parent_path));
		EXPECT_EQ(0, vm_pin_fopen("/proc/self/status"));
		_exit(0);
	}
	int status;
	EXPECT_EQ(child, waitpid(child, &status, 0));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		FAIL("child failed");

	struct t_ioas_unmap unmap = {
		.size = sizeof(unmap), .ioas_id = alloc.out_ioas_id, .iova = map.iova, .length = len,
	};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_UNMAP, &unmap));
	EXPECT_EQ(before, vm_pin_fopen("/proc/self/status"));
	close(fd);
	printf("ok %ld\n", want - before);
	return 0;
}
