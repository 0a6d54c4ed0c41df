/*
 * One of many concurrent clients: N operations on its own iommufd, IOAS and buffer, each
 * checked, so interference between clients (a wrong context, a wrong page, another's bytes)
 * fails it. Operations, chosen by a seeded generator over 8 pages of a private buffer:
 *   IOAS_MAP of one page at a fixed IOVA (the page's own) and IOAS_UNMAP of it;
 *   ACCESS_RW through a selftest access: reading must give the user page's bytes, writing must
 *   change the user page (the IOAS maps that very page);
 *   ACCESS_PAGES pinning a page (the daemon checks it is the page under the user address; the
 *   item IDs this access hands out count up from 0) and DESTROY_ACCESS_PAGES of it, once more
 *   for ENOENT;
 *   the user writes its page directly and an ACCESS_RW read must see it;
 *   IOMMU_DESTROY of the IOAS (ID 1: each context numbers its own objects from 1) and of the
 *   access object (ID 2), both EBUSY while the access lives, and of IDs this context never
 *   made (ENOENT).
 * Usage: stress N SEED. Prints "ok <ops>" on success.
 * Layouts: include/uapi/linux/iommufd.h and tools/testing/selftests/iommu/iommufd_utils.h /
 * drivers/iommu/iommufd/iommufd_test.h (struct iommu_test_cmd: access_pages {flags,
 * out_access_pages_id, iova, length, uptr}, access_rw {iova, length, uptr, flags}).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iommusim_test.h"

#define IOMMU_TEST_OP_DESTROY_ACCESS_PAGES 6
#define IOMMU_TEST_OP_ACCESS_PAGES 7
#define IOMMU_TEST_OP_ACCESS_RW 8
#define MOCK_FLAGS_ACCESS_WRITE (1 << 0)
#define MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES (1 << 0)
#define MOCK_ACCESS_RW_WRITE (1 << 0)

#define PAGES 8
#define IOVA_BASE (1ull << 32)

static int fd, access_fd;
static long page;
static uint8_t *buf, *scratch;
static uint64_t rng;
static unsigned long ops;
static uint32_t next_item_id;

static uint32_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static void fill(uint8_t *p, uint32_t tag)
{
	for (long i = 0; i < page; i += 4) {
		uint32_t v = tag * 2654435761u + (uint32_t)i;
		memcpy(p + i, &v, 4);
	}
}

static int test_cmd(uint32_t op, uint32_t id, const void *arg, size_t len, void *out)
{
	struct t_test_cmd c = {.size = sizeof(c), .op = op, .id = id};
	memcpy(c.raw, arg, len);
	int rc = ioctl(fd, IOMMU_TEST_CMD, &c);
	if (out)
		memcpy(out, c.raw, len);
	ops++;
	return rc;
}

static int access_rw(int p, uint8_t *user, int write)
{
	struct {
		uint64_t iova, length, uptr;
		uint32_t flags, pad;
	} rw = {IOVA_BASE + (uint64_t)p * (uint64_t)page, (uint64_t)page, (uintptr_t)user,
		write ? MOCK_ACCESS_RW_WRITE : 0, 0};
	return test_cmd(IOMMU_TEST_OP_ACCESS_RW, (uint32_t)access_fd, &rw, sizeof(rw), NULL);
}

static int map_page(int p)
{
	struct t_ioas_map m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE,
		.ioas_id = 1,
		.user_va = (uintptr_t)(buf + p * page),
		.length = (uint64_t)page,
		.iova = IOVA_BASE + (uint64_t)p * (uint64_t)page,
	};
	int rc = ioctl(fd, IOMMU_IOAS_MAP, &m);
	ops++;
	if (rc == 0 && m.iova != IOVA_BASE + (uint64_t)p * (uint64_t)page)
		FAIL("MAP moved the fixed IOVA to 0x%llx", (unsigned long long)m.iova);
	return rc;
}

static int unmap_page(int p)
{
	struct t_ioas_unmap u = {.size = sizeof(u), .ioas_id = 1,
				 .iova = IOVA_BASE + (uint64_t)p * (uint64_t)page,
				 .length = (uint64_t)page};
	int rc = ioctl(fd, IOMMU_IOAS_UNMAP, &u);
	ops++;
	if (rc == 0 && u.length != (uint64_t)page)
		FAIL("UNMAP of page %d gave length %llu", p, (unsigned long long)u.length);
	return rc;
}

int main(int argc, char **argv)
{
	unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 0) : 10000;
	int mapped[PAGES] = {0};
	uint32_t tag[PAGES];

	rng = (argc > 2 ? strtoull(argv[2], NULL, 0) : 1) * 0x9e3779b97f4a7c15ull + 1;
	page = sysconf(_SC_PAGESIZE);
	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		FAIL("open: %s", strerror(errno));
	struct t_ioas_alloc alloc = {.size = sizeof(alloc)};
	EXPECT_EQ(0, ioctl(fd, IOMMU_IOAS_ALLOC, &alloc));
	if (alloc.out_ioas_id != 1)
		FAIL("first IOAS of a fresh context has ID %u, not 1", alloc.out_ioas_id);
	buf = mmap(NULL, PAGES * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		   -1, 0);
	scratch = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		       0);
	if (buf == MAP_FAILED || scratch == MAP_FAILED)
		FAIL("mmap");
	for (int p = 0; p < PAGES; p++) {
		tag[p] = next_rand();
		fill(buf + p * page, tag[p]);
	}
	struct {
		uint32_t out_access_fd, flags;
	} ca = {0, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES};
	EXPECT_EQ(0, test_cmd(IOMMU_TEST_OP_CREATE_ACCESS, 1, &ca, sizeof(ca), &ca));
	access_fd = (int)ca.out_access_fd;
	if (fcntl(access_fd, F_GETFD) < 0)
		FAIL("the access fd %d is not open", access_fd);

	while (ops < n) {
		int p = (int)(next_rand() % PAGES);
		uint8_t *user = buf + p * page;
		if (!mapped[p]) {
			EXPECT_EQ(0, map_page(p));
			mapped[p] = 1;
			continue;
		}
		switch (next_rand() % 6) {
		case 0:
			EXPECT_EQ(0, unmap_page(p));
			mapped[p] = 0;
			break;
		case 1: /* read through the access: the user page's bytes */
			memset(scratch, 0, (size_t)page);
			EXPECT_EQ(0, access_rw(p, scratch, 0));
			if (memcmp(scratch, user, (size_t)page) != 0)
				FAIL("ACCESS_RW read of page %d differs from the user page", p);
			break;
		case 2: /* write through the access: the user page changes */
			tag[p] = next_rand();
			fill(scratch, tag[p]);
			EXPECT_EQ(0, access_rw(p, scratch, 1));
			if (memcmp(scratch, user, (size_t)page) != 0)
				FAIL("ACCESS_RW write to page %d did not reach the user page", p);
			break;
		case 3: { /* pin through the access, checked against the user page, then unpin */
			struct {
				uint32_t flags, out_id;
				uint64_t iova, length, uptr;
			} ap = {MOCK_FLAGS_ACCESS_WRITE, 0, IOVA_BASE + (uint64_t)p * (uint64_t)page,
				(uint64_t)page, (uintptr_t)user};
			EXPECT_EQ(0, test_cmd(IOMMU_TEST_OP_ACCESS_PAGES, (uint32_t)access_fd, &ap,
					      sizeof(ap), &ap));
			/* Items are numbered per access from 0 (iommufd_test.c next_id). */
			if (ap.out_id != next_item_id)
				FAIL("ACCESS_PAGES gave item id %u, want %u", ap.out_id, next_item_id);
			next_item_id++;
			uint32_t id = ap.out_id;
			EXPECT_EQ(0, test_cmd(IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, (uint32_t)access_fd,
					      &id, sizeof(id), NULL));
			EXPECT_ERRNO(ENOENT, test_cmd(IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
						      (uint32_t)access_fd, &id, sizeof(id), NULL));
			break;
		}
		case 4: /* the user writes; the device side sees it */
			tag[p] = next_rand();
			fill(user, tag[p]);
			EXPECT_EQ(0, access_rw(p, scratch, 0));
			if (memcmp(scratch, user, (size_t)page) != 0)
				FAIL("ACCESS_RW read missed the user's write to page %d", p);
			break;
		default: /* IDs: the IOAS (1) and the access (2) are busy, nothing else exists */
			EXPECT_ERRNO(EBUSY, destroy_id(fd, 1 + (next_rand() % 2)));
			EXPECT_ERRNO(ENOENT, destroy_id(fd, 3 + (next_rand() % 64)));
			ops += 2;
			break;
		}
	}
	for (int p = 0; p < PAGES; p++)
		if (mapped[p])
			EXPECT_EQ(0, unmap_page(p));
	EXPECT_EQ(0, close(access_fd));
	EXPECT_EQ(0, destroy_id(fd, 1));
	EXPECT_EQ(0, close(fd));
	printf("ok %lu\n", ops);
	return 0;
}
