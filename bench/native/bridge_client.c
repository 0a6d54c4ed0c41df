/*
 * Times the daemon/shim bridge from a C client run under the shim (bench/bridge.ts builds it
 * with `cc -O2` and runs it through `iommusim exec`'s launcher). Prints one JSON object.
 *
 *   bridge_client rtt N       N IOMMU_DESTROY of a missing id (ENOENT: the cheapest call that
 *                             still copies its struct from user memory) and N IOMMU_OPTION GET
 *                             (RLIMIT_MODE: a copy in and a copy out), each timed alone with
 *                             CLOCK_MONOTONIC; p50/p99/mean in microseconds.
 *   bridge_client mapunmap N  IOAS_MAP of one page at a fixed IOVA then IOAS_UNMAP of it,
 *                             N times (pinning, a page-table map and unmap each); pairs per
 *                             second.
 *   bridge_client floor N     no iommufd at all: N 16-byte round trips to a forked child over a
 *                             Unix stream socketpair, timed the same way. What the machine's
 *                             scheduler and sockets cost, to read the other numbers against.
 *
 * The uAPI numbers and layouts are those of include/uapi/linux/iommufd.h (every command is
 * _IO(';', 0x80 + n); IOMMU_OPTION is 0x87, struct iommu_option {u32 size, u32 option_id,
 * u16 op, u16 __reserved, u32 object_id, u64 val64}).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IOMMU_DESTROY _IO(';', 0x80)
#define IOMMU_IOAS_ALLOC _IO(';', 0x81)
#define IOMMU_IOAS_MAP _IO(';', 0x85)
#define IOMMU_IOAS_UNMAP _IO(';', 0x86)
#define IOMMU_OPTION _IO(';', 0x87)
#define MAP_FIXED_IOVA (1 << 0)
#define MAP_WRITEABLE (1 << 1)
#define MAP_READABLE (1 << 2)

struct destroy_arg {
	uint32_t size, id;
};
struct option_arg {
	uint32_t size, option_id;
	uint16_t op, reserved;
	uint32_t object_id;
	uint64_t val64;
};
struct ioas_alloc_arg {
	uint32_t size, flags, out_ioas_id;
};
struct ioas_map_arg {
	uint32_t size, flags, ioas_id, reserved;
	uint64_t user_va, length, iova;
};
struct ioas_unmap_arg {
	uint32_t size, ioas_id;
	uint64_t iova, length;
};

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void die(const char *what)
{
	fprintf(stderr, "bridge_client: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Sorts `t` and prints "name": {p50, p99, mean}. */
static void report(const char *name, double *t, int n, int last)
{
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += t[i];
	qsort(t, (size_t)n, sizeof(*t), cmp_double);
	printf("\"%s\":{\"p50\":%.2f,\"p99\":%.2f,\"mean\":%.2f}%s", name, t[n / 2],
	       t[(int)((long)n * 99 / 100)], sum / n, last ? "" : ",");
}

static void rtt(int fd, int n)
{
	double *t = malloc(sizeof(double) * (size_t)n);
	struct destroy_arg d = {.size = sizeof(d), .id = 0x7fffffff};
	struct option_arg o = {.size = sizeof(o), .option_id = 0, .op = 1};

	if (!t)
		die("malloc");
	for (int i = 0; i < n / 10 + 100; i++) /* warm the daemon's JIT */
		ioctl(fd, IOMMU_DESTROY, &d);
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		int rc = ioctl(fd, IOMMU_DESTROY, &d);
		t[i] = now_us() - t0;
		if (rc != -1 || errno != ENOENT)
			die("IOMMU_DESTROY did not fail with ENOENT");
	}
	printf("{");
	report("destroy_enoent_us", t, n, 0);
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		int rc = ioctl(fd, IOMMU_OPTION, &o);
		t[i] = now_us() - t0;
		if (rc != 0)
			die("IOMMU_OPTION GET");
	}
	report("option_get_us", t, n, 1);
	printf("}\n");
	free(t);
}

static void mapunmap(int fd, int n)
{
	long page = sysconf(_SC_PAGESIZE);
	struct ioas_alloc_arg alloc = {.size = sizeof(alloc)};
	uint8_t *buf;
	double t0, secs;

	if (ioctl(fd, IOMMU_IOAS_ALLOC, &alloc))
		die("IOAS_ALLOC");
	buf = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap");
	memset(buf, 0xa5, (size_t)page);
	struct ioas_map_arg map = {
		.size = sizeof(map),
		.flags = MAP_FIXED_IOVA | MAP_WRITEABLE | MAP_READABLE,
		.ioas_id = alloc.out_ioas_id,
		.user_va = (uintptr_t)buf,
		.length = (uint64_t)page,
		.iova = 1ull << 30,
	};
	struct ioas_unmap_arg unmap = {
		.size = sizeof(unmap), .ioas_id = alloc.out_ioas_id, .iova = 1ull << 30,
		.length = (uint64_t)page,
	};
	for (int i = 0; i < n / 10 + 50; i++) {
		if (ioctl(fd, IOMMU_IOAS_MAP, &map) || ioctl(fd, IOMMU_IOAS_UNMAP, &unmap))
			die("warm-up map/unmap");
	}
	t0 = now_us();
	for (int i = 0; i < n; i++) {
		if (ioctl(fd, IOMMU_IOAS_MAP, &map))
			die("IOAS_MAP");
		if (ioctl(fd, IOMMU_IOAS_UNMAP, &unmap))
			die("IOAS_UNMAP");
	}
	secs = (now_us() - t0) / 1e6;
	printf("{\"map_unmap_per_s\":%.0f,\"pairs\":%d}\n", n / secs, n);
}

static void floor_rtt(int n)
{
	double *t = malloc(sizeof(double) * (size_t)n);
	uint8_t msg[16] = {0};
	int sv[2];
	pid_t child;

	if (!t || socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(sv[0]);
		while (recv(sv[1], msg, sizeof(msg), MSG_WAITALL) == (ssize_t)sizeof(msg))
			if (send(sv[1], msg, sizeof(msg), 0) != (ssize_t)sizeof(msg))
				break;
		_exit(0);
	}
	close(sv[1]);
	for (int i = -1000; i < n; i++) {
		double t0 = now_us();
		if (send(sv[0], msg, sizeof(msg), 0) != (ssize_t)sizeof(msg) ||
		    recv(sv[0], msg, sizeof(msg), MSG_WAITALL) != (ssize_t)sizeof(msg))
			die("echo");
		if (i >= 0)
			t[i] = now_us() - t0;
	}
	close(sv[0]);
	waitpid(child, NULL, 0);
	printf("{");
	report("socket_rtt_us", t, n, 1);
	printf("}\n");
	free(t);
}

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 10000, fd;

	if (argc < 2 || n <= 0) {
		fprintf(stderr, "usage: bridge_client rtt|mapunmap|floor [N]\n");
		return 2;
	}
	if (strcmp(argv[1], "floor") == 0) {
		floor_rtt(n);
		return 0;
	}
	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0)
		die("open /dev/iommu");
	if (strcmp(argv[1], "rtt") == 0)
		rtt(fd, n);
	else if (strcmp(argv[1], "mapunmap") == 0)
		mapunmap(fd, n);
	else
		return 2;
	close(fd);
	return 0;
}
