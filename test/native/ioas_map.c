/*
 * IOAS_ALLOC, MAP of a buffer, UNMAP and DESTROY through the shim. Exits EXIT_SKIP when the
 * daemon's core does not serve IOAS_ALLOC yet (ENOTTY).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iommusim_test.h"

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	struct t_ioas_alloc alloc = {.size = sizeof(alloc)};
	if (ioctl(fd, IOMMU_IOAS_ALLOC, &alloc) != 0) {
		if (errno == ENOTTY) {
			printf("skip: IOAS_ALLOC not served\n");
			return EXIT_SKIP;
		}
		FAIL("IOAS_ALLOC: %s", strerror(errno));
	}
	if (alloc.out_ioas_id == 0)
		FAIL("IOAS_ALLOC gave id 0");

	size_t len = 4 * (size_t)page;
	uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		FAIL("mmap");
	memset(buf, 0x5a, len);
	struct t_ioas_map map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE,
		.ioas_id = alloc.out_ioas_id,
		.user_va = (uintptr_t)buf,
		.length = len,
	};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_MAP, &map));
	if (map.iova % (uint64_t)page)
		FAIL("MAP gave unaligned iova 0x%llx", (unsigned long long)map.iova);

	/* Unmapping less than the whole area is refused; the whole of it comes back. */
	struct t_ioas_unmap unmap = {
		.size = sizeof(unmap), .ioas_id = alloc.out_ioas_id, .iova = map.iova, .length = len,
	};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_UNMAP, &unmap));
	if (unmap.length != len)
		FAIL("UNMAP length %llu, want %zu", (unsigned long long)unmap.length, len);
	EXPECT_ERRNO(ENOENT, ioctl(fd, IOMMU_IOAS_UNMAP, &unmap));
	EXPECT_EQ(0, destroy_id(fd, alloc.out_ioas_id));
	EXPECT_ERRNO(ENOENT, destroy_id(fd, alloc.out_ioas_id));
	close(fd);
	printf("ok iova=0x%llx\n", (unsigned long long)map.iova);
	return 0;
}
