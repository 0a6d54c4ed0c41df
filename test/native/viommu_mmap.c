/*
 * mmap of the iommufd fd through the shim: a selftest vIOMMU offers a region; mapping it
 * works, the iommufd_fops_mmap negative cases fail, and the vIOMMU is busy until munmap.
 * Exits EXIT_SKIP when the core cannot build a mock vIOMMU yet.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>

#include "iommusim_test.h"

#define TRY(call)                                                                  \
	do {                                                                       \
		if ((call) != 0) {                                                 \
			printf("skip: %s: %s\n", #call, strerror(errno));          \
			return EXIT_SKIP;                                          \
		}                                                                  \
	} while (0)

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	struct t_ioas_alloc ioas = {.size = sizeof(ioas)};
	TRY(ioctl(fd, IOMMU_IOAS_ALLOC, &ioas));
	struct t_test_cmd md = {.size = sizeof(md), .op = IOMMU_TEST_OP_MOCK_DOMAIN,
				.id = ioas.out_ioas_id};
	TRY(ioctl(fd, IOMMU_TEST_CMD, &md));
	struct t_hwpt_alloc parent = {.size = sizeof(parent), .flags = IOMMU_HWPT_ALLOC_NEST_PARENT,
				      .dev_id = md.mock_domain.out_idev_id,
				      .pt_id = ioas.out_ioas_id};
	TRY(ioctl(fd, IOMMU_HWPT_ALLOC, &parent));
	struct t_viommu_selftest data = {.in_data = 0xbadbeef};
	struct t_viommu_alloc va = {.size = sizeof(va), .type = IOMMU_VIOMMU_TYPE_SELFTEST,
				    .dev_id = md.mock_domain.out_idev_id,
				    .hwpt_id = parent.out_hwpt_id, .data_len = sizeof(data),
				    .data_uptr = (uintptr_t)&data};
	TRY(ioctl(fd, IOMMU_VIOMMU_ALLOC, &va));
	if (data.out_mmap_length == 0) {
		printf("skip: no mmap region offered\n");
		return EXIT_SKIP;
	}
	size_t len = (size_t)data.out_mmap_length;
	off_t off = (off_t)data.out_mmap_offset;

	uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
	if (m == MAP_FAILED)
		FAIL("mmap of the region: %s", strerror(errno));
	volatile uint8_t first = m[0]; /* readable */
	(void)first;
	EXPECT_ERRNO(EBUSY, destroy_id(fd, va.out_viommu_id));
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
	EXPECT_EQ(0, destroy_id(fd, va.out_viommu_id));
	close(fd);
	printf("ok\n");
	return 0;
}
