/*
 * IOMMU_DESTROY's errno cases and the iommufd file's other answers, through the shim:
 * ENOENT for an unknown id, EFAULT for a NULL or half-unmapped struct, ENOTTY for numbers the
 * file does not know, EINVAL below min_size, E2BIG for a non-zero tail, read/write EINVAL,
 * poll always ready, the mmap checks, the selftest's access() probe and EBADF after close.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iommusim_test.h"

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	int fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		FAIL("open /dev/iommu: %s", strerror(errno));

	EXPECT_EQ(0, access("/sys/bus/iommufd_mock", F_OK));
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 1234));
	EXPECT_ERRNO(EFAULT, ioctl(fd, IOMMU_DESTROY, NULL));
	/* Below IOMMUFD_CMD_BASE (the VFIO range) and past the table: both unknown. */
	{
		struct t_destroy d = {.size = sizeof(d), .id = 1};
		EXPECT_ERRNO(ENOTTY, ioctl(fd, _IO(IOMMUFD_TYPE, 0x7f), &d));
		EXPECT_ERRNO(ENOTTY, ioctl(fd, _IO(IOMMUFD_TYPE, 0xff), &d));
		/* Another ioctl type with DESTROY's nr. */
		EXPECT_ERRNO(ENOTTY, ioctl(fd, _IO('x', 0x80), &d));
	}
	/* size below min_size (offsetofend(id) = 8). */
	{
		struct t_destroy d = {.size = 4, .id = 1};
		EXPECT_ERRNO(EINVAL, ioctl(fd, IOMMU_DESTROY, &d));
	}
	/* A longer struct: zero tail is fine, non-zero tail is E2BIG. */
	{
		struct {
			struct t_destroy d;
			uint64_t future;
		} big = {.d = {.size = sizeof(big), .id = 77}, .future = 0};
		EXPECT_ERRNO(ENOENT, ioctl(fd, IOMMU_DESTROY, &big));
		big.future = 1;
		EXPECT_ERRNO(E2BIG, ioctl(fd, IOMMU_DESTROY, &big));
	}
	/* The struct runs into an unmapped page: the daemon's copy faults there. */
	{
		uint8_t *two = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (two == MAP_FAILED)
			FAIL("mmap");
		munmap(two + page, page);
		struct t_destroy *d = (struct t_destroy *)(two + page - 4);
		d->size = sizeof(*d); /* `id` lies in the hole */
		EXPECT_ERRNO(EFAULT, ioctl(fd, IOMMU_DESTROY, d));
		munmap(two, page);
	}
	/* No read/write ops; poll reports the default mask. */
	{
		char b[8];
		EXPECT_ERRNO(EINVAL, read(fd, b, sizeof(b)));
		EXPECT_ERRNO(EINVAL, write(fd, b, sizeof(b)));
		struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
		EXPECT_EQ(1, poll(&p, 1, 1000));
		if (p.revents != (POLLIN | POLLOUT))
			FAIL("poll revents 0x%x", p.revents);
	}
	/* iommufd_fops_mmap: private EINVAL, exec EPERM, no region ENXIO. */
	EXPECT_EQ((long)MAP_FAILED, (long)mmap(NULL, page, PROT_READ, MAP_PRIVATE, fd, 0));
	if (errno != EINVAL)
		FAIL("mmap MAP_PRIVATE: errno %d", errno);
	EXPECT_EQ((long)MAP_FAILED, (long)mmap(NULL, page, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0));
	if (errno != EPERM)
		FAIL("mmap PROT_EXEC: errno %d", errno);
	EXPECT_EQ((long)MAP_FAILED, (long)mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0));
	if (errno != ENXIO)
		FAIL("mmap of no region: errno %d", errno);

	EXPECT_EQ(0, close(fd));
	EXPECT_ERRNO(EBADF, destroy_id(fd, 1));
	printf("ok\n");
	return 0;
}
