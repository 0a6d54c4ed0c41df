/*
 * The vIOMMU region mapped through the iommufd fd is shared memory with the daemon: a change
 * the daemon makes to the region after the mmap is seen by the client without any call, and
 * the client's writes reach the region. Talks to the test over stdin/stdout:
 *   "mapped <first u32>"   the region is mapped; the test changes it, then says "go";
 *   "seen <u32 at 4> <u32 at 4096>"   what the client reads there now, without a call;
 *   "wrote"                the client stored 0x600df00d at byte 8; the test looks, says "go".
 * Exits EXIT_SKIP when the core cannot build a mock vIOMMU.
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

static void wait_for_go(void)
{
	char line[16];
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		FAIL("no go from the test");
}

int main(void)
{
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
	if (data.out_mmap_length < 8192) {
		printf("skip: no two-page mmap region offered\n");
		return EXIT_SKIP;
	}
	volatile uint32_t *m = mmap(NULL, (size_t)data.out_mmap_length, PROT_READ | PROT_WRITE,
				    MAP_SHARED, fd, (off_t)data.out_mmap_offset);
	if (m == MAP_FAILED)
		FAIL("mmap of the region: %s", strerror(errno));
	printf("mapped 0x%x\n", m[0]);
	wait_for_go();
	printf("seen 0x%x 0x%x\n", m[1], m[1024]);
	m[2] = 0x600df00d;
	printf("wrote\n");
	wait_for_go();
	EXPECT_EQ(0, munmap((void *)m, (size_t)data.out_mmap_length));
	EXPECT_EQ(0, destroy_id(fd, va.out_viommu_id));
	close(fd);
	printf("ok\n");
	return 0;
}
