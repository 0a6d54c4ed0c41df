/*
 * The vIOMMU region mapped through the iommufd fd is shared memory with the daemon: a change
 * the daemon makes to the region after the mmap is seen by the client without any call, and
 * the client's writes reach the region. Talks to the test over stdin/stdout:
 *   "mapped <first u32>"   the region is mapped; the test changes it, then says "go";
 *   "seen <u32 at 4> <u32 at 4096>"   what the client reads there now, without a call;
 *   "wrote"                the client stored 0x600df00d at byte 8; the test looks, says "go".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>

#include "iommusim_test.h"

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
	struct t_viommu_selftest data = {.in_data = 0xbadbeef};
	uint32_t viommu_id = mock_viommu_alloc(fd, &data);
	if (data.out_mmap_length < 8192)
		FAIL("the mock vIOMMU offered no two-page mmap region");
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
	EXPECT_EQ(0, destroy_id(fd, viommu_id));
	close(fd);
	printf("ok\n");
	return 0;
}
