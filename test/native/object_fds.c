/*
 * Fds that ioctls create, through the shim: a fault queue (read/write/poll record semantics,
 * EBUSY on its object until the fd's last close, which completes before close() returns), a
 * selftest access fd and a dma-buf. Each is the lowest free descriptor, as the kernel's
 * get_unused_fd_flags gives. The iommufd's release waits for the access fd: the program says
 * "iommufd-closed", then waits for a line on stdin before closing the access fd.
 * Exits EXIT_SKIP when the core does not serve fault queues yet.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "iommusim_test.h"

int main(void)
{
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));

	/* A fault queue. */
	int expect = lowest_free_fd();
	struct t_fault_alloc fa = {.size = sizeof(fa)};
	if (ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, &fa) != 0) {
		if (errno == ENOTTY)
			return EXIT_SKIP;
		FAIL("FAULT_QUEUE_ALLOC: %s", strerror(errno));
	}
	int q = (int)fa.out_fault_fd;
	if (q != expect)
		FAIL("fault fd %d, want the lowest free %d", q, expect);
	if (!(fcntl(q, F_GETFD) & FD_CLOEXEC))
		FAIL("fault fd is not close-on-exec");
	{
		uint8_t rec[80];
		uint32_t resp[2] = {5, 0};
		EXPECT_ERRNO(ESPIPE, read(q, rec, 8)); /* not a multiple of the record size */
		EXPECT_EQ(0, read(q, rec, 40));	      /* nothing queued */
		EXPECT_ERRNO(ESPIPE, pread(q, rec, 40, 40));
		EXPECT_ERRNO(EINVAL, write(q, resp, sizeof(resp))); /* no such cookie */
		EXPECT_ERRNO(ESPIPE, write(q, resp, 3));
		EXPECT_ERRNO(ENOTTY, ioctl(q, 0x5401, 0));
		struct pollfd p[2] = {{.fd = q, .events = POLLIN | POLLOUT}, {.fd = 0, .events = 0}};
		EXPECT_EQ(1, poll(p, 2, 1000));
		if (p[0].revents != POLLOUT)
			FAIL("fault fd revents 0x%x, want POLLOUT", p[0].revents);
		p[0].events = POLLIN;
		EXPECT_EQ(0, poll(p, 1, 30)); /* waits out its timeout */
	}
	/* A forked child's close of its copy leaves the queue open. */
	pid_t child = fork();
	if (child == 0)
		_exit(close(q) == 0 ? 0 : 1);
	int status;
	waitpid(child, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		FAIL("child close failed");
	EXPECT_ERRNO(EBUSY, destroy_id(fd, fa.out_fault_id));
	EXPECT_EQ(0, close(q));
	EXPECT_EQ(0, destroy_id(fd, fa.out_fault_id)); /* the close completed first */

	/* A selftest access on an IOAS: it holds the IOAS until its fd is closed. */
	struct t_ioas_alloc ioas = {.size = sizeof(ioas)};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_ALLOC, &ioas));
	expect = lowest_free_fd();
	struct t_test_cmd acc = {.size = sizeof(acc), .op = IOMMU_TEST_OP_CREATE_ACCESS,
				 .id = ioas.out_ioas_id};
	EXPECT_EQ(0, ioctl(fd, IOMMU_TEST_CMD, &acc));
	int access = (int)acc.create_access.out_access_fd;
	if (access != expect)
		FAIL("access fd %d, want %d", access, expect);
	{
		char b[8];
		EXPECT_ERRNO(EINVAL, read(access, b, sizeof(b)));
	}
	EXPECT_ERRNO(EBUSY, destroy_id(fd, ioas.out_ioas_id));
	EXPECT_EQ(0, close(access));
	EXPECT_EQ(0, destroy_id(fd, ioas.out_ioas_id));

	/* A dma-buf: the fd is the ioctl's return value. */
	expect = lowest_free_fd();
	struct t_test_cmd db = {.size = sizeof(db), .op = IOMMU_TEST_OP_DMABUF_GET,
				.dmabuf_get = {.length = 4096, .open_flags = O_CLOEXEC}};
	int dmabuf = ioctl(fd, IOMMU_TEST_CMD, &db);
	if (dmabuf != expect)
		FAIL("dma-buf fd %d (errno %s), want %d", dmabuf, strerror(errno), expect);
	EXPECT_EQ(0, close(dmabuf));

	/* A failed creating call leaves no descriptor behind. */
	expect = lowest_free_fd();
	struct t_test_cmd bad = {.size = sizeof(bad), .op = IOMMU_TEST_OP_CREATE_ACCESS, .id = 999};
	EXPECT_ERRNO(ENOENT, ioctl(fd, IOMMU_TEST_CMD, &bad));
	if (lowest_free_fd() != expect)
		FAIL("a failed CREATE_ACCESS left fd %d open", expect);

	/* The iommufd's release waits for an access fd still open. */
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_ALLOC, &ioas));
	EXPECT_EQ(0, ioctl(fd, IOMMU_TEST_CMD, &acc));
	access = (int)acc.create_access.out_access_fd;
	EXPECT_EQ(0, close(fd));
	printf("iommufd-closed\n");
	fflush(stdout);
	char line[8];
	if (read(0, line, sizeof(line)) <= 0)
		FAIL("no go-ahead on stdin");
	EXPECT_EQ(0, close(access));
	printf("ok\n");
	return 0;
}
