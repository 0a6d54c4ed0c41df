/*
 * mmap of the iommufd fd through the shim: a selftest vIOMMU offers a region; mapping it
 * works, the iommufd_fops_mmap negative cases fail, and the vIOMMU is busy until munmap.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>

#include "iommusim_test.h"

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	struct t_viommu_selftest data = {.in_data = 0xbadbeef};
	uint32_t viommu_id = mock_viommu_alloc(fd, &data);
	if (data.out_mmap_length == 0)
		FAIL("the mock vIOMMU offered no mmap region");
	size_t len = (size_t)data.out_mmap_length;
	off_t off = (off_t)data.out_mmap_offset;

	uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
	if (m == MAP_FAILED)
		FAIL("mmap of the region: %s", strerror(errno));
	volatile uint8_t first = m[0]; /* readable */
	(void)first;
	EXPECT_ERRNO(EBUSY, destroy_id(fd, viommu_id));
	/* Negative cases: wrong offset, wrong length, private, executable. */
	EXPECT_EQ((long)MAP_FAILED, (long)mmap(NULL, len, PROT_READ, MAP_SHARED, fd, off + page));
	if (errno != ENXIO)
		FAIL("offset past the region: errno %d", errno);
	EXPECT_EQ((long)MAP_FAILED, (long)mmap(NULL, len * 2, PROT_READ, MAP_SHARED, fd, off));
	if (errno != ENXIO)
		FAIL("twice the length: errno %d", errno);
	EXPECT_EQ((long)MAP_FAILED, (long)mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, off));
	if (errno != EINVAL)
		FAIL("private: errno %d", errno);
	EXPECT_EQ((long)MAP_FAILED, (long)mmap(NULL, len, PROT_READ | PROT_EXEC, MAP_SHARED, fd, off));
	if (errno != EPERM)
		FAIL("exec: errno %d", errno);
	EXPECT_EQ(0, munmap(m, len));
	EXPECT_EQ(0, destroy_id(fd, viommu_id));
	close(fd);
	printf("ok\n");
	return 0;
}
