/*
 * Descriptors closed by calls other than close(): dup2 and dup3 over a descriptor, close_range
 * and closefrom. Each must be followed by the same barrier as close(), so the daemon has
 * released the file before the call returns. A selftest access fd makes that visible: while it
 * is open its IOAS is busy (IOMMU_DESTROY: EBUSY), so a DESTROY right after the call that
 * closed it must succeed; each way is repeated so a missing barrier would lose the race at
 * least once. fcntl(F_DUPFD / F_DUPFD_CLOEXEC) copies hold the file as dup does.
 *
 * Then, talking to the test over stdin/stdout: an iommufd replaced by dup2 is released before
 * dup2 returns ("replaced"); the shim's own control connection survives dup2 onto its number
 * and close_range over it (the test counts control connections), and close_range(3, ~0U)
 * releases the iommufd ("closed-all").
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iommusim_test.h"

#define ROUNDS 40
#define CTL_FD_FLOOR 900 /* where the shim keeps its control connection */
#define MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES (1 << 0)

static int fd;

static uint32_t ioas_alloc(void)
{
	struct t_ioas_alloc a = {.size = sizeof(a)};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_ALLOC, &a));
	return a.out_ioas_id;
}

static int access_create(uint32_t ioas)
{
	struct t_test_cmd c = {.size = sizeof(c), .op = IOMMU_TEST_OP_CREATE_ACCESS, .id = ioas};
	c.create_access.flags = MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES;
	EXPECT_EQ(0, ioctl(fd, IOMMU_TEST_CMD, &c));
	return (int)c.create_access.out_access_fd;
}

static void wait_for_go(const char *stage)
{
	char line[16];
	printf("%s\n", stage);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		FAIL("no go after %s", stage);
}

int main(void)
{
	int null = open("/dev/null", O_RDWR);
	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0 || null < 0)
		FAIL("open: %s", strerror(errno));

	for (int round = 0; round < ROUNDS; round++) {
		/* dup2 and dup3 over the access fd. */
		for (int three = 0; three < 2; three++) {
			uint32_t ioas = ioas_alloc();
			int a = access_create(ioas);
			EXPECT_ERRNO(EBUSY, destroy_id(fd, ioas));
			EXPECT_EQ(a, three ? dup3(null, a, O_CLOEXEC) : dup2(null, a));
			EXPECT_EQ(0, destroy_id(fd, ioas));
			EXPECT_EQ(0, close(a)); /* now /dev/null */
		}
		/* close_range over two access fds (and whatever lies between). */
		{
			uint32_t ioas = ioas_alloc();
			int a = access_create(ioas), b = access_create(ioas);
			int lo = a < b ? a : b, hi = a < b ? b : a;
			EXPECT_EQ(0, close_range((unsigned int)lo, (unsigned int)hi, 0));
			EXPECT_EQ(0, destroy_id(fd, ioas));
			EXPECT_ERRNO(EBADF, fcntl(a, F_GETFD));
		}
		/* closefrom: everything from the access fd up (it is the highest the program has). */
		{
			uint32_t ioas = ioas_alloc();
			int a = access_create(ioas);
			closefrom(a);
			EXPECT_EQ(0, destroy_id(fd, ioas));
		}
		/* A CLOEXEC flag change closes nothing. */
		{
			uint32_t ioas = ioas_alloc();
			int a = access_create(ioas);
			EXPECT_EQ(0, close_range((unsigned int)a, (unsigned int)a, CLOSE_RANGE_CLOEXEC));
			EXPECT_ERRNO(EBUSY, destroy_id(fd, ioas));
			EXPECT_EQ(0, close(a));
			EXPECT_EQ(0, destroy_id(fd, ioas));
		}
		/* F_DUPFD copies hold the access as dup does; the last close releases it. */
		for (int cloexec = 0; cloexec < 2; cloexec++) {
			uint32_t ioas = ioas_alloc();
			int a = access_create(ioas);
			int copy = fcntl(a, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 100);
			if (copy < 100)
				FAIL("F_DUPFD gave %d", copy);
			EXPECT_EQ(0, close(a));
			EXPECT_ERRNO(EBUSY, destroy_id(fd, ioas));
			EXPECT_EQ(0, close(copy));
			EXPECT_EQ(0, destroy_id(fd, ioas));
		}
	}

	/* A second iommufd replaced by dup2: released before dup2 returns. */
	int other = open("/dev/iommu", O_RDWR);
	if (other < 0)
		FAIL("open: %s", strerror(errno));
	EXPECT_ERRNO(ENOENT, destroy_id(other, 1));
	EXPECT_EQ(other, dup2(null, other));
	wait_for_go("replaced");
	EXPECT_EQ(0, close(other));

	/* The shim's control connection is not the program's: dup2 onto its number and
	 * close_range over it leave it working. */
	struct stat st;
	if (fstat(CTL_FD_FLOOR, &st) != 0 || !S_ISSOCK(st.st_mode))
		FAIL("no control connection at %d", CTL_FD_FLOOR);
	EXPECT_EQ(CTL_FD_FLOOR, dup2(null, CTL_FD_FLOOR));
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 12345));
	EXPECT_EQ(0, close(CTL_FD_FLOOR)); /* the program's /dev/null copy */
	EXPECT_EQ(0, close_range(3, ~0U, 0));
	wait_for_go("closed-all");
	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("reopen: %s", strerror(errno));
	EXPECT_ERRNO(ENOENT, destroy_id(fd, 1));
	EXPECT_EQ(0, close(fd));
	printf("ok\n");
	return 0;
}
