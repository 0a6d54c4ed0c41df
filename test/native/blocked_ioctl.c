/*
 * Opens /dev/iommu, says so on stdout, then issues one ioctl (the test holds it in the daemon
 * and kills this process meanwhile). With an argument, first maps that many pages into a new
 * IOAS, so pins may be outstanding when it dies.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iommusim_test.h"

int main(int argc, char **argv)
{
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	if (argc > 1) {
		long pages = atol(argv[1]);
		struct t_ioas_alloc alloc = {.size = sizeof(alloc)};
		if (ioctl(fd, IOMMU_IOAS_ALLOC, &alloc) == 0) {
			size_t len = (size_t)pages * 4096;
			void *buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
			struct t_ioas_map map = {
				.size = sizeof(map),
				.flags = IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE,
				.ioas_id = alloc.out_ioas_id,
				.user_va = (uintptr_t)buf,
				.length = len,
			};
			ioctl(fd, IOMMU_IOAS_MAP, &map);
		}
	}
	printf("opened\n");
	fflush(stdout);
	destroy_id(fd, 1);
	printf("returned\n");
	return 0;
}
