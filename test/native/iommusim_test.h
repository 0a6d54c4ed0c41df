/*
 * What our own C clients need of the iommufd uAPI, written from the published layout
 * (include/uapi/linux/iommufd.h: every command is _IO(';', 0x80 + n) and every struct starts
 * with its u32 size), plus small check helpers. The system headers here predate iommufd.
 */
#ifndef IOMMUSIM_TEST_H
#define IOMMUSIM_TEST_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define IOMMUFD_TYPE ';'
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#define IOMMU_HWPT_ALLOC _IO(IOMMUFD_TYPE, 0x89)
#define IOMMU_FAULT_QUEUE_ALLOC _IO(IOMMUFD_TYPE, 0x8e)
#define IOMMU_VIOMMU_ALLOC _IO(IOMMUFD_TYPE, 0x90)
/* iommufd_test.h: IOMMU_TEST_CMD = _IO(';', IOMMUFD_CMD_BASE + 32). */
#define IOMMU_TEST_CMD _IO(IOMMUFD_TYPE, 0x80 + 32)
#define IOMMU_TEST_OP_MOCK_DOMAIN 2
#define IOMMU_TEST_OP_CREATE_ACCESS 5
#define IOMMU_TEST_OP_DMABUF_GET 22
#define IOMMU_HWPT_ALLOC_NEST_PARENT (1 << 0)
#define IOMMU_VIOMMU_TYPE_SELFTEST 0xdeadbeef

#define IOMMU_IOAS_MAP_FIXED_IOVA (1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)

struct t_destroy {
	uint32_t size;
	uint32_t id;
};

struct t_ioas_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t out_ioas_id;
};

struct t_ioas_map {
	uint32_t size;
	uint32_t flags;
	uint32_t ioas_id;
	uint32_t reserved;
	uint64_t user_va;
	uint64_t length;
	uint64_t iova;
};

struct t_ioas_unmap {
	uint32_t size;
	uint32_t ioas_id;
	uint64_t iova;
	uint64_t length;
};

struct t_fault_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t out_fault_id;
	uint32_t out_fault_fd;
};

struct t_hwpt_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t dev_id;
	uint32_t pt_id;
	uint32_t out_hwpt_id;
	uint32_t reserved;
	uint32_t data_type;
	uint32_t data_len;
	uint64_t data_uptr;
	uint32_t fault_id;
	uint32_t reserved2;
};

struct t_viommu_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t type;
	uint32_t dev_id;
	uint32_t hwpt_id;
	uint32_t out_viommu_id;
	uint32_t data_len;
	uint32_t reserved;
	uint64_t data_uptr;
};

struct t_viommu_selftest {
	uint32_t in_data;
	uint32_t out_data;
	uint64_t out_mmap_offset;
	uint64_t out_mmap_length;
};

/* struct iommu_test_cmd: {size, op, id, __reserved, union (48 bytes) at 16, last at 64}. */
struct t_test_cmd {
	uint32_t size;
	uint32_t op;
	uint32_t id;
	uint32_t reserved;
	union {
		struct {
			uint32_t out_stdev_id;
			uint32_t out_hwpt_id;
			uint32_t out_idev_id;
		} mock_domain;
		struct {
			uint32_t out_access_fd;
			uint32_t flags;
		} create_access;
		struct {
			uint32_t length;
			uint32_t open_flags;
		} dmabuf_get;
		uint8_t raw[48];
	};
	uint64_t last;
};

/* Exit status meaning "this needs something the daemon does not have yet". */
#define EXIT_SKIP 77

#define FAIL(...)                                                                  \
	do {                                                                       \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                    \
		fprintf(stderr, __VA_ARGS__);                                      \
		fprintf(stderr, "\n");                                             \
		exit(1);                                                           \
	} while (0)

/* Checks that `call` returned -1 with errno `want`. */
#define EXPECT_ERRNO(want, call)                                                   \
	do {                                                                       \
		errno = 0;                                                         \
		long rc_ = (long)(call);                                           \
		if (rc_ != -1 || errno != (want))                                  \
			FAIL("%s: got rc %ld errno %d (%s), want errno %d (%s)", #call, \
			     rc_, errno, strerror(errno), (want), strerror(want)); \
	} while (0)

/* Checks that `call` returned `want`. */
#define EXPECT_EQ(want, call)                                                      \
	do {                                                                       \
		long rc_ = (long)(call);                                           \
		if (rc_ != (long)(want))                                           \
			FAIL("%s: got %ld (errno %d %s), want %ld", #call, rc_, errno,  \
			     strerror(errno), (long)(want));                       \
	} while (0)

/* The descriptor the next open would get (the kernel hands out the lowest free). */
static inline int lowest_free_fd(void)
{
	int fd = dup(0);
	if (fd >= 0)
		close(fd);
	return fd;
}

static inline int destroy_id(int fd, uint32_t id)
{
	struct t_destroy d = {.size = sizeof(d), .id = id};
	return ioctl(fd, IOMMU_DESTROY, &d);
}

/*
 * A selftest vIOMMU the way the kernel selftest builds one: an IOAS, a mock device on it, a
 * nest-parent HWPT, then VIOMMU_ALLOC with `data` as driver data (its out_mmap_* name the
 * region). Returns the vIOMMU id; fails the test on any error.
 */
static inline uint32_t mock_viommu_alloc(int fd, struct t_viommu_selftest *data)
{
	struct t_ioas_alloc ioas = {.size = sizeof(ioas)};
	if (ioctl(fd, IOMMU_IOAS_ALLOC, &ioas) != 0)
		FAIL("IOAS_ALLOC: %s", strerror(errno));
	struct t_test_cmd md = {.size = sizeof(md), .op = IOMMU_TEST_OP_MOCK_DOMAIN,
				.id = ioas.out_ioas_id};
	if (ioctl(fd, IOMMU_TEST_CMD, &md) != 0)
		FAIL("MOCK_DOMAIN: %s", strerror(errno));
	struct t_hwpt_alloc parent = {.size = sizeof(parent), .flags = IOMMU_HWPT_ALLOC_NEST_PARENT,
				      .dev_id = md.mock_domain.out_idev_id,
				      .pt_id = ioas.out_ioas_id};
	if (ioctl(fd, IOMMU_HWPT_ALLOC, &parent) != 0)
		FAIL("HWPT_ALLOC: %s", strerror(errno));
	struct t_viommu_alloc va = {.size = sizeof(va), .type = IOMMU_VIOMMU_TYPE_SELFTEST,
				    .dev_id = md.mock_domain.out_idev_id,
				    .hwpt_id = parent.out_hwpt_id, .data_len = sizeof(*data),
				    .data_uptr = (uintptr_t)data};
	if (ioctl(fd, IOMMU_VIOMMU_ALLOC, &va) != 0)
		FAIL("VIOMMU_ALLOC: %s", strerror(errno));
	return va.out_viommu_id;
}

#endif
