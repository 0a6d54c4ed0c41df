/* Opens its own /dev/iommu and prints the errno of IOMMU_DESTROY on the id given (0 = none). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>

#include "iommusim_test.h"

int main(int argc, char **argv)
{
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0 || argc < 2)
		FAIL("open: %s", strerror(errno));
	int rc = destroy_id(fd, (uint32_t)atoi(argv[1]));
	printf("%d\n", rc == 0 ? 0 : errno);
	close(fd);
	return 0;
}
