/* Opens /dev/iommu, runs one DESTROY and exits with the status given as argument. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>

#include "iommusim_test.h"

int main(int argc, char **argv)
{
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 3));
	close(fd);
	return argc > 1 ? atoi(argv[1]) : 0;
}
