/*
 * User copies of an ioctl's struct through the shim, which reads the struct itself and sends it
 * inline, and stores the daemon's writes back: the faults must be those of the kernel's
 * copy_from_user / copy_to_user all the same. IOMMU_OPTION GET of RLIMIT_MODE reads 24 bytes
 * and writes val64 (bytes 16..23) back; struct iommu_option, include/uapi/linux/iommufd.h.
 *
 *  - a struct running into a PROT_NONE page: EFAULT; one that ends at the page's edge: fine;
 *  - a struct in a read-only page: the read works, the write faults (EFAULT);
 *  - val64 straddling into a read-only page: EFAULT, and the read-only page is unchanged;
 *  - mprotect between calls (the daemon's cached maps must follow it), both ways;
 *  - a struct in memory mapped by a raw syscall the shim never sees (the daemon's cache misses
 *    it and looks again);
 *  - a struct deeper in a stack that has grown since the last call.
 * Prints "ok".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "iommusim_test.h"

#define IOMMU_OPTION _IO(IOMMUFD_TYPE, 0x87)

struct t_option {
	uint32_t size;
	uint32_t option_id;
	uint16_t op;
	uint16_t reserved;
	uint32_t object_id;
	uint64_t val64;
};

static int fd;

/* An OPTION GET of RLIMIT_MODE with the struct at `at`; val64 starts as all ones. */
static int option_get_at(uint8_t *at)
{
	struct t_option o = {.size = sizeof(o), .op = 1, .val64 = ~0ull};
	memcpy(at, &o, sizeof(o));
	return ioctl(fd, IOMMU_OPTION, at);
}

static uint64_t val64_at(const uint8_t *at)
{
	uint64_t v;
	memcpy(&v, at + 16, 8);
	return v;
}

/* Recursion that puts an OPTION struct `depth` KiB further down the stack each level. */
static int deep_call(int depth)
{
	volatile uint8_t pad[1024];
	struct t_option o = {.size = sizeof(o), .op = 1, .val64 = ~0ull};
	pad[0] = (uint8_t)depth;
	if (depth > 0)
		return deep_call(depth - 1) + pad[0] - (uint8_t)depth;
	if (ioctl(fd, IOMMU_OPTION, &o) != 0 || o.val64 != 0)
		return 1;
	return 0;
}

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	uint8_t *m = mmap(NULL, 3 * (size_t)page, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		FAIL("mmap");

	/* Page 1 becomes PROT_NONE: a struct ending at its edge is fine, one crossing it is not. */
	EXPECT_EQ(0, mprotect(m + page, (size_t)page, PROT_NONE));
	EXPECT_EQ(0, option_get_at(m + page - 24));
	if (val64_at(m + page - 24) != 0)
		FAIL("val64 not written back at the page's edge");
	{
		/* Only the 20 bytes before the edge can be written here; the kernel reads 24. */
		struct t_option o = {.size = sizeof(o), .op = 1};
		memcpy(m + page - 20, &o, 20);
		EXPECT_ERRNO(EFAULT, ioctl(fd, IOMMU_OPTION, m + page - 20));
	}

	/* Page 1 read-only: the read of the struct works, the write of val64 does not. */
	EXPECT_EQ(0, mprotect(m + page, (size_t)page, PROT_READ | PROT_WRITE));
	uint8_t *in_ro = m + page + 64;
	EXPECT_EQ(0, option_get_at(in_ro));
	struct t_option ro = {.size = sizeof(ro), .op = 1, .val64 = ~0ull};
	memcpy(in_ro, &ro, sizeof(ro));
	/* And one whose val64 straddles the edge: bytes 16..19 before it, 20..23 after. */
	memcpy(m + page - 20, &ro, sizeof(ro));
	uint8_t after[64];
	memcpy(after, m + page, sizeof(after));
	EXPECT_EQ(0, mprotect(m + page, (size_t)page, PROT_READ));
	EXPECT_ERRNO(EFAULT, ioctl(fd, IOMMU_OPTION, in_ro));
	if (val64_at(in_ro) != ~0ull)
		FAIL("a read-only struct was written");

	/* val64 straddles into the read-only page: EFAULT, the read-only half untouched. */
	EXPECT_ERRNO(EFAULT, ioctl(fd, IOMMU_OPTION, m + page - 20));
	if (memcmp(m + page, after, sizeof(after)) != 0)
		FAIL("the read-only page changed");

	/* Writable again: the daemon must not go on believing it is read-only. */
	EXPECT_EQ(0, mprotect(m + page, (size_t)page, PROT_READ | PROT_WRITE));
	EXPECT_EQ(0, ioctl(fd, IOMMU_OPTION, in_ro));
	if (val64_at(in_ro) != 0)
		FAIL("val64 not written after mprotect back to read-write");

	/* Memory the shim never saw mapped (a raw system call). */
	uint8_t *raw = (uint8_t *)syscall(SYS_mmap, NULL, (size_t)page, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		FAIL("raw mmap");
	EXPECT_EQ(0, option_get_at(raw));
	if (val64_at(raw) != 0)
		FAIL("val64 not written in memory mapped behind the shim's back");
	/* And unmapped behind its back: the daemon's copy faults. */
	EXPECT_EQ(0, syscall(SYS_munmap, raw, (size_t)page));
	EXPECT_ERRNO(EFAULT, ioctl(fd, IOMMU_OPTION, raw));

	/* A struct 256 KiB down a stack that grows to reach it. */
	if (deep_call(256) != 0)
		FAIL("OPTION on a freshly grown stack");

	close(fd);
	printf("ok\n");
	return 0;
}
