/*
 * iommusim LD_PRELOAD shim: shows an unmodified C program a /dev/iommu served by the iommusim
 * daemon (src/daemon/server.ts) over the Unix socket named by $IOMMUSIM_SOCKET.
 *
 * What it intercepts, and why:
 *  - open/open64/openat/openat64 and the fortified __open_2/__open64_2/__openat_2/__openat64_2
 *    of "/dev/iommu": the fd returned is a real kernel fd, a Unix socket connected to the
 *    daemon and bound to the abstract name "iommusim/i<mode>/<random>". fork, dup and close
 *    therefore keep the kernel's own reference counting; the daemon sees EOF at the last close
 *    and releases the context there (iommufd_fops_release). The daemon's reply to the open
 *    carries a 16-byte secret that stays unread in the socket: the shim reads it back with
 *    MSG_PEEK to name the context, so only a holder of the fd can name it.
 *  - ioctl on those fds: forwarded as (secret, cmd, arg, pid, tid) over this process's control
 *    connection, with the struct at `arg` as far as process_vm_readv on ourselves can read it
 *    (it stops exactly where the kernel's copy_from_user would fault; at most 128 bytes, no
 *    more than the struct's size word asks). The daemon serves copies inside those bytes from
 *    them and sends back its writes inside them, which are stored (process_vm_writev) before
 *    the ioctl returns; every other copy it makes itself on this process's memory
 *    (/proc/<pid>/mem), so bad pointers fault exactly where the kernel's would.
 *  - mmap/munmap/mremap/mprotect/pkey_mprotect/brk/sbrk/shmat/shmdt/remap_file_pages of any
 *    memory: the call is made, then a "map generation" counter moves on. Requests that copy
 *    user memory carry it, and the daemon trusts the maps it parsed while it is unchanged.
 *  - close: after the real close, a CLOSE barrier; the daemon releases the context then if that
 *    was the last reference, so the release is complete before close() returns. dup2 and dup3
 *    over one of our fds, close_range and closefrom over them get the same barrier. The shim's
 *    own control connection is hidden from them: dup2 onto its number moves it elsewhere first,
 *    close_range skips it. (fcntl F_DUPFD* closes nothing, so it needs nothing.)
 *  - fds an ioctl creates (fault queues, vEVENTQs, selftest accesses and dma-bufs): the daemon
 *    cannot pass descriptors, so it answers such an ioctl "need an fd" before running it; the
 *    shim then makes another daemon-connected socket ("iommusim/o...", with its own secret)
 *    and repeats the call naming it. The core hands out that real, lowest-free number, and
 *    the socket's last close is the file's release, seen by the daemon as for the iommufd.
 *  - read/write/pread/pwrite/poll/ppoll/mmap/munmap on those fds: the iommufd file has no
 *    read/write (EINVAL) and is always ready; queue fds get their record semantics from the
 *    daemon, and a poll waiting on one asks the daemon again every few milliseconds; mmap of
 *    the iommufd goes through the daemon's checks, then a memfd is mapped shared, which the
 *    daemon opens through /proc/<pid>/fd and keeps equal to the region (later changes on
 *    either side are seen by the other); without memfd_create, anonymous shared memory the
 *    daemon fills once. The memfd's descriptor is closed as soon as the mapping is made.
 *  - access("/sys/bus/iommufd_mock"): 0, which is how the kernel selftest detects a test build.
 *  - /proc/self/task/<tid>/fail-nth, /proc/<pid>/task/<tid>/fail-nth, /proc/thread-self/fail-nth
 *    and /proc/<pid>/fail-nth: a local socket stands for the file; reads and writes go to the
 *    daemon, which arms the task's count on the iommufd context of its next ioctl.
 *  - paths under /sys/kernel/debug: redirected to the daemon's fake debugfs (<socket>.debugfs),
 *    so fault-injection knobs can be written without touching the real kernel's.
 *  - open and fopen of /proc/<pid>/status (self, thread-self, task/<tid>) for reading: the
 *    host's file with VmPin and VmLck raised by what the daemon's iommufd charged that process
 *    (mm->pinned_vm, mm->locked_vm), as a memfd; the host kernel itself pins nothing for us.
 *
 * One control connection per process (made lazily, re-made in a forked child, kept on a high
 * close-on-exec fd), calls serialised by a mutex. Wire format: src/daemon/protocol.ts.
 *
 * Build: cc -shared -fPIC -O2 -o iommusim_shim.so iommusim_shim.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- wire format (src/daemon/protocol.ts) ------------------------------------------------ */

#define HDR_SIZE 16
#define SECRET_SIZE 16
#define INLINE_MAX 128			/* struct bytes an IOCTL request carries */
#define IOCTL_FIXED 64			/* IOCTL payload before the inline bytes */
#define REQ_MAX (IOCTL_FIXED + INLINE_MAX) /* largest request payload */
#define REPLY_MAX (8 + INLINE_MAX * 5)	/* largest reply payload the shim reads */
enum {
	OP_OPEN = 1,
	OP_HELLO = 2,
	OP_IOCTL = 3,
	OP_CLOSE = 4,
	OP_FAILNTH_READ = 5,
	OP_FAILNTH_WRITE = 6,
	OP_MMAP = 7,
	OP_MUNMAP = 8,
	OP_OBJ_READ = 9,
	OP_OBJ_WRITE = 10,
	OP_OBJ_OPEN = 12,
	OP_OBJ_POLL = 13,
	OP_MMAP_ADDR = 14,
	OP_PROC_STATUS = 15,
};

/* IOCTL reply flags. */
#define REPLY_NEED_FD 1 /* nothing ran: repeat with a fresh object fd */
#define REPLY_FD_USED 2 /* the object fd now stands for the file the ioctl made */

#define NAME_PREFIX "iommusim/"
#define NAME_PREFIX_LEN 9
#define CTL_FD_FLOOR 900 /* the control fd is moved up here, away from the client's numbers */
#define MMAP_SLOTS 64
#define FN_POS_SLOTS 1024

enum { KIND_NONE, KIND_IOMMUFD, KIND_FAILNTH, KIND_OBJECT };

struct fd_ident {
	int kind;
	char mode; /* 'r', 'w' or 'b' (both), from the open flags */
	uint8_t secret[SECRET_SIZE]; /* iommufd and object fds: names them to the daemon */
	uint32_t pid, tid;	     /* fail-nth: the task the file belongs to */
};

/* ---- the real functions ------------------------------------------------------------------ */

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef ssize_t (*rw_fn)(int, void *, size_t);
typedef ssize_t (*prw_fn)(int, void *, size_t, off_t);
typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*ppoll_fn)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef int (*access_fn)(const char *, int);
typedef int (*faccessat_fn)(int, const char *, int, int);
typedef DIR *(*opendir_fn)(const char *);

static void *real(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	if (!p) {
		static const char msg[] = "iommusim shim: a libc symbol is missing\n";
		ssize_t ignored = syscall(SYS_write, 2, msg, sizeof(msg) - 1);
		(void)ignored;
		abort();
	}
	return p;
}

#define REAL(type, name) ((type)real(name))

/* ---- small helpers ----------------------------------------------------------------------- */

static pid_t my_tid(void) { return (pid_t)syscall(SYS_gettid); }

static int raw_close(int fd)
{
	int saved = errno;
	int r = (int)syscall(SYS_close, fd);
	errno = saved;
	return r;
}

static const char *socket_path(void)
{
	const char *p = getenv("IOMMUSIM_SOCKET");
	return p && *p ? p : NULL;
}

static void put32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }
static void put64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }

static uint64_t random64(void)
{
	uint64_t v = 0;
	if (syscall(SYS_getrandom, &v, sizeof(v), 0) != (long)sizeof(v)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		v = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
	}
	return v;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = recv(fd, p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Sends one frame on `fd` and reads its reply; the reply payload goes to `reply` (at most
 * `cap` bytes, the rest is discarded unless `keep_payload`, which leaves it in the socket).
 * Returns the reply's ret, or -EIO when the daemon cannot be reached. */
static long exchange(int fd, uint32_t op, const void *payload, uint32_t plen, void *reply,
		     uint32_t cap, int keep_payload)
{
	static uint32_t seq;
	uint8_t frame[HDR_SIZE + REQ_MAX];
	uint8_t in[HDR_SIZE + REPLY_MAX];
	uint32_t len = HDR_SIZE + plen, rlen = 0, got = 0;
	int32_t ret;

	if (plen > sizeof(frame) - HDR_SIZE)
		return -EINVAL;
	put32(frame, 0, len);
	put32(frame, 4, op);
	put32(frame, 8, __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	put32(frame, 12, 0);
	if (plen)
		memcpy(frame + HDR_SIZE, payload, plen);
	if (write_all(fd, frame, len))
		return -EIO;
	if (keep_payload) {
		/* Only the header: the payload (a secret) stays in the socket. */
		if (read_all(fd, in, HDR_SIZE))
			return -EIO;
		memcpy(&ret, in + 12, 4);
		return ret;
	}
	/* One request is outstanding on this connection, so whatever arrives is its reply: read
	 * it with as few calls as it takes. */
	while (got < HDR_SIZE || got < rlen) {
		uint32_t room = rlen > got && rlen <= sizeof(in) ? rlen - got : (uint32_t)sizeof(in) - got;
		ssize_t n = recv(fd, in + got, room, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		got += (uint32_t)n;
		if (got >= 4 && rlen == 0) {
			memcpy(&rlen, in, 4);
			if (rlen < HDR_SIZE)
				return -EIO;
			if (rlen > sizeof(in))
				break; /* larger than any reply we ask for: the rest is drained below */
		}
	}
	memcpy(&ret, in + 12, 4);
	if (reply && cap) {
		uint32_t have = (got < rlen ? got : rlen) - HDR_SIZE;
		memcpy(reply, in + HDR_SIZE, have < cap ? have : cap);
	}
	if (rlen <= got)
		return ret;
	rlen -= got;
	while (rlen > 0) {
		uint8_t sink[64];
		uint32_t n = rlen < sizeof(sink) ? rlen : (uint32_t)sizeof(sink);
		if (read_all(fd, sink, n))
			return -EIO;
		rlen -= n;
	}
	return ret;
}

static int connect_daemon(int type_flags)
{
	const char *path = socket_path();
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	if (!path || strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENODEV;
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | type_flags, 0);
	if (fd < 0)
		return -1;
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			return fd;
		if (errno != EINTR)
			break;
	}
	raw_close(fd);
	errno = ENODEV;
	return -1;
}

/* Binds `fd` to the abstract name "<prefix><random hex>". */
static int bind_name(int fd, const char *prefix)
{
	for (int tries = 0; tries < 8; tries++) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		int n = snprintf(sun.sun_path + 1, sizeof(sun.sun_path) - 1, "%s%016llx", prefix,
				 (unsigned long long)random64());
		socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
		if (bind(fd, (struct sockaddr *)&sun, len) == 0)
			return 0;
		if (errno != EADDRINUSE)
			return -1;
	}
	return -1;
}

/* ---- the control connection -------------------------------------------------------------- */

static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static int ctl_fd = -1;
static pid_t ctl_pid;
static ino_t ctl_ino;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&ctl_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&ctl_lock); }
static void atfork_child(void)
{
	/* The inherited control socket is the parent's conversation: drop this copy of it. */
	if (ctl_fd >= 0)
		raw_close(ctl_fd);
	ctl_fd = -1;
	pthread_mutex_init(&ctl_lock, NULL);
}

static void init_once(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

__attribute__((constructor)) static void shim_init(void) { pthread_once(&once, init_once); }

static int ctl_valid(void)
{
	struct stat st;
	return ctl_fd >= 0 && ctl_pid == getpid() && fstat(ctl_fd, &st) == 0 &&
	       st.st_ino == ctl_ino;
}

/* Makes sure this process has a control connection; call with ctl_lock held. */
static int ctl_ensure(void)
{
	uint8_t hello[8], reply[8];
	uint32_t daemon_pid;
	struct stat st;
	int fd, high;
	long ret;

	if (ctl_valid())
		return 0;
	/* A stale number (another process's connection, or a slot the program reused) is left
	 * alone: closing it could close one of the program's own files. */
	ctl_fd = -1;
	fd = connect_daemon(SOCK_CLOEXEC);
	if (fd < 0)
		return -1;
	high = fcntl(fd, F_DUPFD_CLOEXEC, CTL_FD_FLOOR);
	if (high >= 0) {
		raw_close(fd);
		fd = high;
	}
	put32(hello, 0, (uint32_t)getpid());
	put32(hello, 4, (uint32_t)my_tid());
	ret = exchange(fd, OP_HELLO, hello, sizeof(hello), reply, sizeof(reply), 0);
	if (ret < 0 || fstat(fd, &st) != 0) {
		raw_close(fd);
		errno = ENODEV;
		return -1;
	}
	memcpy(&daemon_pid, reply, 4);
	/* Under Yama ptrace_scope=1 the daemon may only read our memory if we say so. */
	prctl(PR_SET_PTRACER, (unsigned long)daemon_pid, 0, 0, 0);
	ctl_fd = fd;
	ctl_pid = getpid();
	ctl_ino = st.st_ino;
	return 0;
}

/* One call to the daemon: the reply's ret (>= 0) or -errno. */
static long call(uint32_t op, const void *payload, uint32_t plen, void *reply, uint32_t cap)
{
	int saved = errno;
	long ret;

	pthread_once(&once, init_once);
	pthread_mutex_lock(&ctl_lock);
	if (ctl_ensure() != 0) {
		pthread_mutex_unlock(&ctl_lock);
		errno = saved;
		return -ENODEV;
	}
	ret = exchange(ctl_fd, op, payload, plen, reply, cap, 0);
	if (ret == -EIO) {
		/* The daemon went away (or answered EIO): start afresh next time. */
		raw_close(ctl_fd);
		ctl_fd = -1;
	}
	pthread_mutex_unlock(&ctl_lock);
	errno = saved;
	return ret;
}

static int is_ctl_fd(int fd) { return fd >= 0 && fd == ctl_fd && ctl_pid == getpid(); }

/* ---- the map generation and inline struct bytes ------------------------------------------ */

/*
 * Bumped after every call of the program's that can change its mappings (mmap, munmap, mremap,
 * mprotect, pkey_mprotect, brk, sbrk, shmat, shmdt, remap_file_pages) and sent with every
 * request that copies user memory: the daemon keeps its parsed /proc/<pid>/maps while the
 * generation is unchanged. Never 0 (the wire's "unknown").
 */
static uint32_t map_gen = 1;

static void maps_changed(void)
{
	if (__atomic_add_fetch(&map_gen, 1, __ATOMIC_RELEASE) == 0)
		__atomic_store_n(&map_gen, 1, __ATOMIC_RELEASE);
}

static uint32_t current_map_gen(void)
{
	uint32_t g = __atomic_load_n(&map_gen, __ATOMIC_ACQUIRE);
	return g ? g : 1;
}

/* process_vm_readv/writev work here (a seccomp filter may refuse them). */
static int self_copy_ok = 1;

/*
 * Reads what it can of the struct at `arg` into `dst` (at most INLINE_MAX bytes, and no more
 * than the struct's leading u32 size asks) and returns the count. process_vm_readv on ourselves
 * never raises a signal and stops at the first page a user copy could not read, so the bytes
 * we send are exactly the ones the kernel's copy_from_user would see. Past the page holding
 * `arg`, the next page is touched only when the struct reaches into it.
 */
static uint32_t read_inline(pid_t self, uintptr_t arg, uint8_t *dst)
{
	static long page;
	struct iovec local, remote;
	uint32_t size, want, first;
	ssize_t n;
	int saved = errno;

	if (!__atomic_load_n(&self_copy_ok, __ATOMIC_RELAXED) || arg == 0 ||
	    arg > UINTPTR_MAX - INLINE_MAX)
		return 0;
	if (!page)
		page = sysconf(_SC_PAGESIZE);
	first = (uint32_t)((uintptr_t)page - (arg & ((uintptr_t)page - 1)));
	if (first > INLINE_MAX)
		first = INLINE_MAX;
	local = (struct iovec){dst, first};
	remote = (struct iovec){(void *)arg, first};
	n = process_vm_readv(self, &local, 1, &remote, 1, 0);
	if (n < 4) {
		if (n < 0 && (errno == ENOSYS || errno == EPERM))
			__atomic_store_n(&self_copy_ok, 0, __ATOMIC_RELAXED);
		errno = saved;
		return 0;
	}
	memcpy(&size, dst, 4);
	want = size < 4 ? 4 : (size > INLINE_MAX ? INLINE_MAX : size);
	if (want > (uint32_t)n) {
		/* The struct goes on into the next page. */
		local = (struct iovec){dst + n, want - (uint32_t)n};
		remote = (struct iovec){(void *)(arg + (uintptr_t)n), want - (uint32_t)n};
		ssize_t more = process_vm_readv(self, &local, 1, &remote, 1, 0);
		if (more > 0)
			n += more;
	}
	errno = saved;
	return want < (uint32_t)n ? want : (uint32_t)n;
}

/* Stores the daemon's writes into the struct at `arg`: records of (u16 offset, u16 length,
 * bytes), all in one process_vm_writev. */
static void write_back(pid_t self, uintptr_t arg, const uint8_t *rec, uint32_t len)
{
	struct iovec local[16], remote[16];
	int n = 0, saved = errno;

	while (len >= 4) {
		uint16_t off, l;
		memcpy(&off, rec, 2);
		memcpy(&l, rec + 2, 2);
		if (4u + l > len)
			break;
		local[n] = (struct iovec){(void *)(rec + 4), l};
		remote[n] = (struct iovec){(void *)(arg + off), l};
		rec += 4 + l;
		len -= 4u + l;
		if (++n == 16 || len < 4) {
			process_vm_writev(self, local, (unsigned long)n, remote, (unsigned long)n, 0);
			n = 0;
		}
	}
	if (n)
		process_vm_writev(self, local, (unsigned long)n, remote, (unsigned long)n, 0);
	errno = saved;
}

/* ---- recognising our fds ----------------------------------------------------------------- */

/* What `fd` is to the shim. Preserves errno. */
static int fd_kind(int fd, struct fd_ident *id)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	char name[sizeof(sun.sun_path)];
	size_t nlen;
	int saved = errno;

	id->kind = KIND_NONE;
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&sun, &len) != 0) {
		errno = saved;
		return KIND_NONE;
	}
	errno = saved;
	if (sun.sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path) + 1 ||
	    sun.sun_path[0] != 0)
		return KIND_NONE;
	nlen = len - offsetof(struct sockaddr_un, sun_path) - 1;
	if (nlen >= sizeof(name))
		return KIND_NONE;
	memcpy(name, sun.sun_path + 1, nlen);
	name[nlen] = 0;
	if (nlen < NAME_PREFIX_LEN + 3 || memcmp(name, NAME_PREFIX, NAME_PREFIX_LEN) != 0)
		return KIND_NONE;
	id->mode = name[NAME_PREFIX_LEN + 1];
	if (name[NAME_PREFIX_LEN] == 'i' || name[NAME_PREFIX_LEN] == 'o') {
		ssize_t n;
		do
			n = recv(fd, id->secret, SECRET_SIZE, MSG_PEEK | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		errno = saved;
		if (n != SECRET_SIZE)
			return KIND_NONE;
		id->kind = name[NAME_PREFIX_LEN] == 'i' ? KIND_IOMMUFD : KIND_OBJECT;
		return id->kind;
	}
	if (name[NAME_PREFIX_LEN] == 'f') {
		unsigned pid, tid;
		if (sscanf(name + NAME_PREFIX_LEN + 2, "/%u/%u/", &pid, &tid) != 2)
			return KIND_NONE;
		id->pid = pid;
		id->tid = tid;
		id->kind = KIND_FAILNTH;
		return id->kind;
	}
	return KIND_NONE;
}

static char mode_of(int flags)
{
	switch (flags & O_ACCMODE) {
	case O_RDONLY:
		return 'r';
	case O_WRONLY:
		return 'w';
	default:
		return 'b';
	}
}

/* vfs_read/vfs_write on a file without read/write ops: EBADF if not open for it, else EINVAL. */
static int no_rw_errno(const struct fd_ident *id, int writing)
{
	if (writing ? id->mode == 'r' : id->mode == 'w')
		return EBADF;
	return EINVAL;
}

/* ---- paths ------------------------------------------------------------------------------- */

enum { PATH_OTHER, PATH_IOMMU, PATH_FAILNTH, PATH_DEBUGFS, PATH_MOCK_BUS };

static __thread char redirect_buf[PATH_MAX];

static int parse_uint(const char **p, unsigned *out)
{
	char *end;
	unsigned long v;
	if (**p < '0' || **p > '9')
		return -1;
	v = strtoul(*p, &end, 10);
	if (v > UINT_MAX)
		return -1;
	*out = (unsigned)v;
	*p = end;
	return 0;
}

/* Recognises a fail-nth path; fills the task (pid, tid) it names. */
static int failnth_path(const char *path, unsigned *pid, unsigned *tid)
{
	const char *p;
	if (strncmp(path, "/proc/", 6) != 0)
		return 0;
	p = path + 6;
	if (strcmp(p, "thread-self/fail-nth") == 0) {
		*pid = (unsigned)getpid();
		*tid = (unsigned)my_tid();
		return 1;
	}
	if (strncmp(p, "self/", 5) == 0) {
		*pid = (unsigned)getpid();
		p += 5;
	} else {
		if (parse_uint(&p, pid) || *p != '/')
			return 0;
		p++;
	}
	if (strcmp(p, "fail-nth") == 0) {
		*tid = *pid; /* the thread-group leader's file */
		return 1;
	}
	if (strncmp(p, "task/", 5) != 0)
		return 0;
	p += 5;
	if (parse_uint(&p, tid) || strcmp(p, "/fail-nth") != 0)
		return 0;
	return 1;
}

static int classify(const char *path, unsigned *pid, unsigned *tid, const char **redirect)
{
	const char *sock;
	if (!path)
		return PATH_OTHER;
	if (strcmp(path, "/dev/iommu") == 0)
		return socket_path() ? PATH_IOMMU : PATH_OTHER;
	if (path[0] != '/' || !(sock = socket_path()))
		return PATH_OTHER;
	if (strcmp(path, "/sys/bus/iommufd_mock") == 0 || strcmp(path, "/sys/bus/iommufd_mock/") == 0)
		return PATH_MOCK_BUS;
	if (strncmp(path, "/sys/kernel/debug", 17) == 0 && (path[17] == 0 || path[17] == '/')) {
		int n = snprintf(redirect_buf, sizeof(redirect_buf), "%s.debugfs%s", sock, path + 17);
		if (n < 0 || (size_t)n >= sizeof(redirect_buf))
			return PATH_OTHER;
		*redirect = redirect_buf;
		return PATH_DEBUGFS;
	}
	if (failnth_path(path, pid, tid))
		return PATH_FAILNTH;
	return PATH_OTHER;
}

/* ---- opening ----------------------------------------------------------------------------- */

/* A socket connected to the daemon standing for a file the daemon serves: the iommufd itself
 * (kind 'i', OP_OPEN) or an fd an ioctl creates (kind 'o', OP_OBJ_OPEN). The daemon's reply
 * carries the secret naming it, which stays in the socket for MSG_PEEK. Sets `secret`. */
static int open_daemon_fd(char kind, uint32_t op, int flags, uint8_t *secret)
{
	const char *path = socket_path();
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	uint8_t req[16];
	char prefix[32];
	long ret;
	int fd, rc, saved = errno;

	if (!path || strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENODEV;
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | ((flags & O_CLOEXEC) ? SOCK_CLOEXEC : 0), 0);
	if (fd < 0)
		return -1;
	snprintf(prefix, sizeof(prefix), NAME_PREFIX "%c%c/", kind, mode_of(flags));
	if (bind_name(fd, prefix) != 0) {
		raw_close(fd);
		errno = ENODEV;
		return -1;
	}
	do
		rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	while (rc != 0 && errno == EINTR);
	if (rc != 0) {
		raw_close(fd);
		errno = ENODEV;
		return -1;
	}
	put32(req, 0, (uint32_t)getpid());
	put32(req, 4, (uint32_t)my_tid());
	put32(req, 8, (uint32_t)flags);
	put32(req, 12, 0);
	ret = exchange(fd, op, req, sizeof(req), NULL, 0, 1);
	if (ret < 0) {
		raw_close(fd);
		errno = ret == -EIO ? ENODEV : (int)-ret;
		return -1;
	}
	for (;;) {
		ssize_t n = recv(fd, secret, SECRET_SIZE, MSG_PEEK);
		if (n == SECRET_SIZE)
			break;
		if (n == 0 || (n < 0 && errno != EINTR)) {
			raw_close(fd);
			errno = ENODEV;
			return -1;
		}
		poll(&(struct pollfd){.fd = fd, .events = POLLIN}, 1, 10);
	}
	errno = saved;
	return fd;
}

static int open_iommufd(int flags)
{
	uint8_t secret[SECRET_SIZE];
	return open_daemon_fd('i', OP_OPEN, flags, secret);
}

static off_t fn_pos[FN_POS_SLOTS];

static int open_failnth(unsigned pid, unsigned tid, int flags)
{
	char prefix[64], task[64];
	struct stat st;
	int fd;

	snprintf(task, sizeof(task), "/proc/%u/task/%u", pid, tid);
	if (stat(task, &st) != 0) {
		errno = ENOENT;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | ((flags & O_CLOEXEC) ? SOCK_CLOEXEC : 0), 0);
	if (fd < 0)
		return -1;
	snprintf(prefix, sizeof(prefix), NAME_PREFIX "f%c/%u/%u/", mode_of(flags), pid, tid);
	if (bind_name(fd, prefix) != 0) {
		raw_close(fd);
		errno = ENOMEM;
		return -1;
	}
	if (fd < FN_POS_SLOTS)
		fn_pos[fd] = 0;
	return fd;
}

/* ---- /proc/<pid>/status ------------------------------------------------------------------ */

/* The process a status path names: "/proc/self/status", "/proc/thread-self/status",
 * "/proc/<pid>/status" or "/proc/<pid>/task/<tid>/status"; 0 for any other path. */
static pid_t status_target(const char *path)
{
	const char *p;
	unsigned pid, tid;
	if (!path || strncmp(path, "/proc/", 6) != 0 || !socket_path())
		return 0;
	p = path + 6;
	if (strcmp(p, "self/status") == 0 || strcmp(p, "thread-self/status") == 0)
		return getpid();
	if (parse_uint(&p, &pid) || pid == 0)
		return 0;
	if (strcmp(p, "/status") == 0)
		return (pid_t)pid;
	if (strncmp(p, "/task/", 6) != 0)
		return 0;
	p += 6;
	if (parse_uint(&p, &tid) || strcmp(p, "/status") != 0)
		return 0;
	return (pid_t)pid;
}

/* Appends "<name>\t%8lu kB\n" (the kernel's layout) for `kb` to out; returns the new length. */
static size_t put_kb_line(char *out, size_t len, size_t cap, const char *name, unsigned long kb)
{
	int n = snprintf(out + len, cap - len, "%s\t%8lu kB\n", name, kb);
	return (n < 0 || (size_t)n >= cap - len) ? len : len + (size_t)n;
}

/*
 * The host kernel's status file with VmPin and VmLck as iommufd charges them: the daemon's
 * mm->pinned_vm and mm->locked_vm for that process, added to what the host reports (the host
 * pins nothing for our DMA). An anonymous file with the result; -2 to open the real file
 * (writing, a process the daemon does not know, or any failure on the way).
 */
static int open_status(const char *path, pid_t target, int flags)
{
	static const size_t cap = 16384;
	uint8_t req[8], rep[16];
	uint64_t pinned, locked;
	char *in, *out;
	size_t inlen = 0, outlen = 0;
	int fd, mfd = -2;
	if ((flags & O_ACCMODE) != O_RDONLY)
		return -2;
	put32(req, 0, (uint32_t)getpid());
	put32(req, 4, (uint32_t)target);
	if (call(OP_PROC_STATUS, req, sizeof(req), rep, sizeof(rep)) < 0)
		return -2;
	memcpy(&pinned, rep, 8);
	memcpy(&locked, rep + 8, 8);
	fd = REAL(open_fn, "open")(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -2;
	in = malloc(cap);
	out = malloc(cap + 128);
	if (in && out) {
		ssize_t n;
		while (inlen < cap - 1 && (n = syscall(SYS_read, fd, in + inlen, cap - 1 - inlen)) > 0)
			inlen += (size_t)n;
		in[inlen] = 0;
		for (char *line = in; *line;) {
			char *nl = strchr(line, '\n');
			size_t llen = nl ? (size_t)(nl - line + 1) : strlen(line);
			unsigned long host_kb = 0;
			if (strncmp(line, "VmLck:", 6) == 0 || strncmp(line, "VmPin:", 6) == 0) {
				int lck = line[2] == 'L';
				host_kb = strtoul(line + 6, NULL, 10);
				outlen = put_kb_line(out, outlen, cap + 128, lck ? "VmLck:" : "VmPin:",
						     host_kb + (unsigned long)(lck ? locked : pinned) * 4);
			} else if (outlen + llen < cap + 128) {
				memcpy(out + outlen, line, llen);
				outlen += llen;
			}
			line += llen;
		}
		mfd = memfd_create("status", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
		if (mfd >= 0 && (syscall(SYS_write, mfd, out, outlen) != (long)outlen ||
				 lseek(mfd, 0, SEEK_SET) != 0)) {
			raw_close(mfd);
			mfd = -2;
		}
		if (mfd < 0)
			mfd = -2;
	}
	free(in);
	free(out);
	raw_close(fd);
	return mfd;
}

/* Returns -2 when the path is not ours (the caller then opens it, maybe redirected). */
static int open_ours(const char *path, int flags, const char **redirect)
{
	unsigned pid = 0, tid = 0;
	pid_t status_of = status_target(path);
	if (status_of) {
		int fd = open_status(path, status_of, flags);
		if (fd != -2)
			return fd;
	}
	switch (classify(path, &pid, &tid, redirect)) {
	case PATH_IOMMU:
		return open_iommufd(flags);
	case PATH_FAILNTH:
		return open_failnth(pid, tid, flags);
	default:
		return -2;
	}
}

static mode_t mode_arg(int flags, va_list ap)
{
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		return (mode_t)va_arg(ap, int);
	return 0;
}

static int do_open(const char *sym, const char *path, int flags, mode_t mode)
{
	const char *redirect = NULL;
	int fd = open_ours(path, flags, &redirect);
	if (fd != -2)
		return fd;
	return REAL(open_fn, sym)(redirect ? redirect : path, flags, mode);
}

static int do_openat(const char *sym, int dirfd, const char *path, int flags, mode_t mode)
{
	const char *redirect = NULL;
	int fd = open_ours(path, flags, &redirect);
	if (fd != -2)
		return fd;
	return REAL(openat_fn, sym)(dirfd, redirect ? redirect : path, flags, mode);
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return do_open("open", path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return do_open("open64", path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return do_openat("openat", dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return do_openat("openat64", dirfd, path, flags, mode);
}

/* The fortified entry points (_FORTIFY_SOURCE) never carry a mode. */
int __open_2(const char *path, int flags) { return do_open("open", path, flags, 0); }
int __open64_2(const char *path, int flags) { return do_open("open64", path, flags, 0); }
int __openat_2(int dirfd, const char *path, int flags)
{
	return do_openat("openat", dirfd, path, flags, 0);
}
int __openat64_2(int dirfd, const char *path, int flags)
{
	return do_openat("openat64", dirfd, path, flags, 0);
}

/* glibc's fopen opens without going through open(): the status file needs its own entry. */
typedef FILE *(*fopen_fn)(const char *, const char *);
static FILE *do_fopen(const char *sym, const char *path, const char *mode)
{
	pid_t status_of = status_target(path);
	if (status_of && mode && mode[0] == 'r' && !strchr(mode, '+')) {
		int fd = open_status(path, status_of, O_RDONLY | (strchr(mode, 'e') ? O_CLOEXEC : 0));
		if (fd >= 0) {
			FILE *f = fdopen(fd, mode);
			if (f)
				return f;
			raw_close(fd);
		}
	}
	return REAL(fopen_fn, sym)(path, mode);
}
FILE *fopen(const char *path, const char *mode) { return do_fopen("fopen", path, mode); }
FILE *fopen64(const char *path, const char *mode) { return do_fopen("fopen64", path, mode); }

DIR *opendir(const char *path)
{
	const char *redirect = NULL;
	unsigned pid, tid;
	classify(path, &pid, &tid, &redirect);
	return REAL(opendir_fn, "opendir")(redirect ? redirect : path);
}

int access(const char *path, int mode)
{
	const char *redirect = NULL;
	unsigned pid, tid;
	if (classify(path, &pid, &tid, &redirect) == PATH_MOCK_BUS)
		return 0;
	return REAL(access_fn, "access")(redirect ? redirect : path, mode);
}

int faccessat(int dirfd, const char *path, int mode, int flags)
{
	const char *redirect = NULL;
	unsigned pid, tid;
	if (classify(path, &pid, &tid, &redirect) == PATH_MOCK_BUS)
		return 0;
	return REAL(faccessat_fn, "faccessat")(dirfd, redirect ? redirect : path, mode, flags);
}

/* ---- ioctl and close --------------------------------------------------------------------- */

int ioctl(int fd, unsigned long request, ...)
{
	struct fd_ident id;
	uint8_t req[REQ_MAX], reply[REPLY_MAX], obj_secret[SECRET_SIZE];
	uint32_t flags = 0, inline_len, wb_len;
	pid_t self = getpid();
	int obj = -1;
	va_list ap;
	void *arg;
	long ret;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	switch (fd_kind(fd, &id)) {
	case KIND_NONE:
		return REAL(ioctl_fn, "ioctl")(fd, request, arg);
	case KIND_FAILNTH:
	case KIND_OBJECT:
		errno = ENOTTY; /* files without an ioctl op */
		return -1;
	}
	memcpy(req, id.secret, SECRET_SIZE);
	put32(req, 16, (uint32_t)request); /* the syscall takes an unsigned int cmd */
	put32(req, 20, (uint32_t)my_tid());
	put64(req, 24, (uint64_t)(uintptr_t)arg);
	put32(req, 32, (uint32_t)self);
	put32(req, 36, (uint32_t)-1);
	memset(req + 40, 0, SECRET_SIZE);
	for (;;) {
		put32(req, 56, current_map_gen());
		inline_len = read_inline(self, (uintptr_t)arg, req + IOCTL_FIXED);
		put32(req, 60, inline_len);
		memset(reply, 0, 8);
		ret = call(OP_IOCTL, req, IOCTL_FIXED + inline_len, reply, sizeof(reply));
		memcpy(&flags, reply, 4);
		memcpy(&wb_len, reply + 4, 4);
		if (wb_len > 0 && wb_len <= sizeof(reply) - 8)
			write_back(self, (uintptr_t)arg, reply + 8, wb_len);
		if (ret < 0 || !(flags & REPLY_NEED_FD) || obj >= 0)
			break;
		/* The call makes a file: give it a descriptor, then ask again. */
		obj = open_daemon_fd('o', OP_OBJ_OPEN, O_RDWR | O_CLOEXEC, obj_secret);
		if (obj < 0) {
			ret = -errno;
			break;
		}
		put32(req, 36, (uint32_t)obj);
		memcpy(req + 40, obj_secret, SECRET_SIZE);
	}
	if (obj >= 0 && !(flags & REPLY_FD_USED))
		raw_close(obj);
	if (ret < 0) {
		errno = (int)-ret;
		return -1;
	}
	return (int)ret;
}

/* After `fd`, which was `id`, lost a descriptor: the barrier (the daemon releases the file then
 * if that was its last reference, before we return), or the fail-nth position's reset. */
static void closed_fd(int fd, int kind, const struct fd_ident *id)
{
	int saved = errno;
	if (kind == KIND_IOMMUFD || kind == KIND_OBJECT) {
		uint8_t req[24];
		memcpy(req, id->secret, SECRET_SIZE);
		put32(req, 16, (uint32_t)getpid());
		put32(req, 20, (uint32_t)my_tid());
		call(OP_CLOSE, req, sizeof(req), NULL, 0);
	} else if (kind == KIND_FAILNTH && fd >= 0 && fd < FN_POS_SLOTS) {
		fn_pos[fd] = 0;
	}
	errno = saved;
}

int close(int fd)
{
	struct fd_ident id;
	int kind = fd_kind(fd, &id), r;

	if (kind == KIND_NONE) {
		if (is_ctl_fd(fd)) {
			errno = EBADF; /* the shim's own connection is not the program's to close */
			return -1;
		}
		return (int)syscall(SYS_close, fd);
	}
	r = (int)syscall(SYS_close, fd);
	closed_fd(fd, kind, &id);
	return r;
}

/* ---- descriptors closed by other calls: dup2, dup3, close_range, closefrom --------------- */

typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*close_range_fn)(unsigned int, unsigned int, int);
typedef void (*closefrom_fn)(int);

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/*
 * `newfd` is about to be replaced: if it is the shim's control connection, move that out of
 * the way first (the program owns the number, and losing the connection would end this
 * process's mappings in the daemon). Call with ctl_lock held.
 */
static int move_ctl_from(int newfd)
{
	if (!is_ctl_fd(newfd))
		return 0;
	int moved = fcntl(ctl_fd, F_DUPFD_CLOEXEC, CTL_FD_FLOOR);
	if (moved < 0)
		return 0;
	ctl_fd = moved; /* the old number is the program's now; dup2 closes it */
	return 1;
}

static int do_dup(const char *sym, int oldfd, int newfd, int flags, int three)
{
	struct fd_ident id;
	int kind = KIND_NONE, r, old_kind, saved, moved = 0;
	off_t pos = 0;

	pthread_once(&once, init_once);
	pthread_mutex_lock(&ctl_lock);
	if (oldfd != newfd && newfd >= 0) {
		moved = move_ctl_from(newfd);
		kind = fd_kind(newfd, &id);
	}
	{
		struct fd_ident old_id;
		old_kind = fd_kind(oldfd, &old_id);
		if (old_kind == KIND_FAILNTH && oldfd < FN_POS_SLOTS)
			pos = fn_pos[oldfd];
	}
	r = three ? REAL(dup3_fn, sym)(oldfd, newfd, flags) : REAL(dup2_fn, sym)(oldfd, newfd);
	saved = errno;
	if (r < 0 && moved) {
		/* Nothing was replaced: the connection goes back to its number. */
		raw_close(ctl_fd);
		ctl_fd = newfd;
	}
	pthread_mutex_unlock(&ctl_lock);
	if (r >= 0 && kind != KIND_NONE)
		closed_fd(newfd, kind, &id);
	/* dup'd descriptors share the file position; ours is kept per number, so copy it. */
	if (r >= 0 && old_kind == KIND_FAILNTH && r < FN_POS_SLOTS)
		fn_pos[r] = pos;
	errno = saved;
	return r;
}

int dup2(int oldfd, int newfd) { return do_dup("dup2", oldfd, newfd, 0, 0); }

int dup3(int oldfd, int newfd, int flags) { return do_dup("dup3", oldfd, newfd, flags, 1); }

struct closing {
	int fd, kind;
	struct fd_ident id;
};

/* Our descriptors (iommufd, object, fail-nth) open in [first, last]; the caller frees *out. */
static int our_fds_in(unsigned int first, unsigned int last, struct closing **out)
{
	struct closing *list = NULL;
	int n = 0, cap = 0, dir;
	char buf[4096];

	*out = NULL;
	dir = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/fd",
			   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return -1;
	for (;;) {
		long got = syscall(SYS_getdents64, dir, buf, sizeof(buf));
		if (got <= 0)
			break;
		for (long at = 0; at < got;) {
			/* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name */
			uint16_t reclen;
			memcpy(&reclen, buf + at + 16, 2);
			const char *name = buf + at + 19;
			at += reclen;
			if (name[0] < '0' || name[0] > '9')
				continue;
			unsigned long v = strtoul(name, NULL, 10);
			if (v < first || v > last || (int)v == dir)
				continue;
			struct fd_ident id;
			int kind = fd_kind((int)v, &id);
			if (kind == KIND_NONE)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				struct closing *bigger = realloc(list, (size_t)cap * sizeof(*list));
				if (!bigger)
					break;
				list = bigger;
			}
			list[n].fd = (int)v;
			list[n].kind = kind;
			list[n].id = id;
			n++;
		}
	}
	raw_close(dir);
	*out = list;
	return n;
}

/* close_range itself: the real function when libc has it, else the system call. */
static int real_close_range(unsigned int first, unsigned int last, int flags)
{
	static close_range_fn fn;
	static int looked;
	if (!__atomic_load_n(&looked, __ATOMIC_ACQUIRE)) {
		fn = (close_range_fn)dlsym(RTLD_NEXT, "close_range");
		__atomic_store_n(&looked, 1, __ATOMIC_RELEASE);
	}
	if (fn)
		return fn(first, last, flags);
#ifdef SYS_close_range
	return (int)syscall(SYS_close_range, first, last, flags);
#else
	errno = ENOSYS;
	return -1;
#endif
}

int close_range(unsigned int first, unsigned int last, int flags)
{
	struct closing *ours = NULL;
	int n = 0, r, saved;

	if (flags & CLOSE_RANGE_CLOEXEC)
		return real_close_range(first, last, flags); /* nothing is closed now */
	pthread_once(&once, init_once);
	pthread_mutex_lock(&ctl_lock);
	if (first <= last)
		n = our_fds_in(first, last, &ours);
	/* The control connection survives, hidden as it is from the program. */
	if (ctl_fd >= 0 && ctl_pid == getpid() && (unsigned int)ctl_fd >= first &&
	    (unsigned int)ctl_fd <= last) {
		unsigned int c = (unsigned int)ctl_fd;
		r = 0;
		if (c > first)
			r = real_close_range(first, c - 1, flags);
		if (r == 0 && c < last)
			r = real_close_range(c + 1, last, flags);
	} else {
		r = real_close_range(first, last, flags);
	}
	saved = errno;
	pthread_mutex_unlock(&ctl_lock);
	if (r == 0)
		for (int i = 0; i < n; i++)
			closed_fd(ours[i].fd, ours[i].kind, &ours[i].id);
	free(ours);
	errno = saved;
	return r;
}

void closefrom(int lowfd)
{
	if (close_range(lowfd < 0 ? 0 : (unsigned int)lowfd, ~0U, 0) == 0)
		return;
	/* No close_range in this kernel: libc's own way, without barriers. */
	closefrom_fn fn = (closefrom_fn)dlsym(RTLD_NEXT, "closefrom");
	if (fn)
		fn(lowfd);
}

/* ---- fail-nth reads and writes ----------------------------------------------------------- */

static ssize_t failnth_rw(int fd, const struct fd_ident *id, void *buf, size_t count,
			  off_t pos, int use_file_pos, int writing)
{
	uint8_t req[48];
	long ret;

	if (writing ? id->mode == 'r' : id->mode == 'w') {
		errno = EBADF;
		return -1;
	}
	if (use_file_pos)
		pos = fd < FN_POS_SLOTS ? fn_pos[fd] : 0;
	put32(req, 0, (uint32_t)getpid());
	put32(req, 4, (uint32_t)my_tid());
	put32(req, 8, id->tid);
	put32(req, 12, id->pid);
	put64(req, 16, (uint64_t)(uintptr_t)buf);
	put64(req, 24, (uint64_t)count);
	put64(req, 32, (uint64_t)pos);
	put32(req, 40, current_map_gen());
	put32(req, 44, 0);
	ret = call(writing ? OP_FAILNTH_WRITE : OP_FAILNTH_READ, req, sizeof(req), NULL, 0);
	if (ret < 0) {
		errno = (int)-ret;
		return -1;
	}
	if (use_file_pos && !writing && fd < FN_POS_SLOTS)
		fn_pos[fd] += ret;
	return ret;
}

/* read/write of an object fd: the daemon answers with the file's own semantics. */
static ssize_t object_rw(const struct fd_ident *id, void *buf, size_t count, off_t pos,
			 int writing)
{
	uint8_t req[56];
	long ret;

	if (writing ? id->mode == 'r' : id->mode == 'w') {
		errno = EBADF;
		return -1;
	}
	memcpy(req, id->secret, SECRET_SIZE);
	put32(req, 16, (uint32_t)getpid());
	put32(req, 20, (uint32_t)my_tid());
	put64(req, 24, (uint64_t)(uintptr_t)buf);
	put64(req, 32, (uint64_t)count);
	put64(req, 40, (uint64_t)pos);
	put32(req, 48, current_map_gen());
	put32(req, 52, 0);
	ret = call(writing ? OP_OBJ_WRITE : OP_OBJ_READ, req, sizeof(req), NULL, 0);
	if (ret < 0) {
		errno = (int)-ret;
		return -1;
	}
	return ret;
}

ssize_t read(int fd, void *buf, size_t count)
{
	struct fd_ident id;
	switch (fd_kind(fd, &id)) {
	case KIND_NONE:
		return REAL(rw_fn, "read")(fd, buf, count);
	case KIND_FAILNTH:
		return failnth_rw(fd, &id, buf, count, 0, 1, 0);
	case KIND_OBJECT:
		return object_rw(&id, buf, count, 0, 0);
	}
	errno = no_rw_errno(&id, 0);
	return -1;
}

ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen)
{
	if (count > buflen)
		abort();
	return read(fd, buf, count);
}

ssize_t write(int fd, const void *buf, size_t count)
{
	struct fd_ident id;
	switch (fd_kind(fd, &id)) {
	case KIND_NONE:
		return REAL(rw_fn, "write")(fd, (void *)buf, count);
	case KIND_FAILNTH:
		return failnth_rw(fd, &id, (void *)buf, count, 0, 1, 1);
	case KIND_OBJECT:
		return object_rw(&id, (void *)buf, count, 0, 1);
	}
	errno = no_rw_errno(&id, 1);
	return -1;
}

static ssize_t do_pread(const char *sym, int fd, void *buf, size_t count, off_t off)
{
	struct fd_ident id;
	switch (fd_kind(fd, &id)) {
	case KIND_NONE:
		return REAL(prw_fn, sym)(fd, buf, count, off);
	case KIND_FAILNTH:
		return failnth_rw(fd, &id, buf, count, off, 0, 0);
	case KIND_OBJECT:
		return object_rw(&id, buf, count, off, 0);
	}
	errno = no_rw_errno(&id, 0);
	return -1;
}

static ssize_t do_pwrite(const char *sym, int fd, const void *buf, size_t count, off_t off)
{
	struct fd_ident id;
	switch (fd_kind(fd, &id)) {
	case KIND_NONE:
		return REAL(prw_fn, sym)(fd, (void *)buf, count, off);
	case KIND_FAILNTH:
		return failnth_rw(fd, &id, (void *)buf, count, off, 0, 1);
	case KIND_OBJECT:
		return object_rw(&id, (void *)buf, count, off, 1);
	}
	errno = no_rw_errno(&id, 1);
	return -1;
}

ssize_t pread(int fd, void *buf, size_t count, off_t off)
{
	return do_pread("pread", fd, buf, count, off);
}
ssize_t pread64(int fd, void *buf, size_t count, off_t off)
{
	return do_pread("pread64", fd, buf, count, off);
}
ssize_t __pread_chk(int fd, void *buf, size_t count, off_t off, size_t buflen)
{
	if (count > buflen)
		abort();
	return do_pread("pread", fd, buf, count, off);
}
ssize_t __pread64_chk(int fd, void *buf, size_t count, off_t off, size_t buflen)
{
	if (count > buflen)
		abort();
	return do_pread("pread64", fd, buf, count, off);
}
ssize_t pwrite(int fd, const void *buf, size_t count, off_t off)
{
	return do_pwrite("pwrite", fd, buf, count, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off)
{
	return do_pwrite("pwrite64", fd, buf, count, off);
}

/* ---- poll -------------------------------------------------------------------------------- */

/* Files without a poll op are always ready: DEFAULT_POLLMASK filtered by the events asked. */
#define DEFAULT_POLLMASK (POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM)
/* How often a wait on a queue fd asks the daemon again. */
#define POLL_SLICE_MS 5

/* The ready mask of one of our fds. */
static short our_mask(const struct fd_ident *id, short events)
{
	short filter = (short)(events | POLLERR | POLLHUP);
	if (id->kind == KIND_OBJECT) {
		uint8_t req[24];
		long ret;
		memcpy(req, id->secret, SECRET_SIZE);
		put32(req, 16, (uint32_t)getpid());
		put32(req, 20, (uint32_t)my_tid());
		ret = call(OP_OBJ_POLL, req, sizeof(req), NULL, 0);
		return ret < 0 ? POLLNVAL : (short)(ret & filter);
	}
	return (short)(DEFAULT_POLLMASK & filter);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * poll over a mix of real fds and ours. Ours are hidden from the real poll (a negative fd is
 * skipped) and asked of the daemon; while none is ready the real poll waits in short slices so
 * a queue that fills meanwhile is seen. `wait` is the real poll with a timeout in ms.
 * Returns -2 when no fd is ours (the caller then polls as usual).
 */
static int poll_mixed(struct pollfd *fds, nfds_t n, int timeout_ms,
		      int (*wait)(struct pollfd *, nfds_t, int, void *), void *ctx)
{
	int small[2 * 64], *saved, *masks, ours = 0, rc = 0;
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;

	saved = n <= 64 ? small : malloc(2 * n * sizeof(int));
	if (!saved)
		return -2;
	masks = saved + n;
	for (nfds_t i = 0; i < n; i++) {
		struct fd_ident id;
		saved[i] = -1;
		if (fds[i].fd < 0 || fd_kind(fds[i].fd, &id) == KIND_NONE)
			continue;
		saved[i] = fds[i].fd;
		fds[i].fd = -1;
		ours++;
	}
	if (!ours) {
		if (saved != small)
			free(saved);
		return -2;
	}
	for (;;) {
		int ready = 0, slice;
		for (nfds_t i = 0; i < n; i++) {
			struct fd_ident id;
			if (saved[i] < 0)
				continue;
			if (fd_kind(saved[i], &id) == KIND_NONE)
				masks[i] = POLLNVAL; /* closed meanwhile */
			else
				masks[i] = our_mask(&id, fds[i].events);
			ready += masks[i] != 0;
		}
		if (ready) {
			slice = 0;
		} else if (deadline < 0) {
			slice = POLL_SLICE_MS;
		} else {
			int64_t left = deadline - now_ms();
			slice = left <= 0 ? 0 : (left < POLL_SLICE_MS ? (int)left : POLL_SLICE_MS);
		}
		rc = wait(fds, n, slice, ctx);
		if (rc < 0)
			break;
		if (ready || rc > 0 || (deadline >= 0 && now_ms() >= deadline)) {
			rc += ready;
			break;
		}
	}
	for (nfds_t i = 0; i < n; i++) {
		if (saved[i] < 0)
			continue;
		fds[i].fd = saved[i];
		fds[i].revents = (short)masks[i]; /* the real poll cleared it */
	}
	if (saved != small)
		free(saved);
	return rc;
}

static int wait_poll(struct pollfd *fds, nfds_t n, int ms, void *ctx)
{
	(void)ctx;
	return REAL(poll_fn, "poll")(fds, n, ms);
}

static int wait_ppoll(struct pollfd *fds, nfds_t n, int ms, void *ctx)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	return REAL(ppoll_fn, "ppoll")(fds, n, &ts, (const sigset_t *)ctx);
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	int rc = poll_mixed(fds, n, timeout, wait_poll, NULL);
	return rc == -2 ? REAL(poll_fn, "poll")(fds, n, timeout) : rc;
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
	int ms = -1;
	if (ts) {
		int64_t v = (int64_t)ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000;
		ms = v > INT_MAX ? INT_MAX : (int)v;
	}
	int rc = poll_mixed(fds, n, ms, wait_ppoll, (void *)mask);
	return rc == -2 ? REAL(ppoll_fn, "ppoll")(fds, n, ts, mask) : rc;
}

int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return poll(fds, n, timeout);
}

int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask,
		size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return ppoll(fds, n, ts, mask);
}

/* ---- mmap -------------------------------------------------------------------------------- */

struct mmap_slot {
	uintptr_t addr;
	size_t len;
	uint8_t secret[SECRET_SIZE];
};
static struct mmap_slot mmaps[MMAP_SLOTS];
static int mmap_count; /* munmap takes the lock only when something is recorded */

static void *do_mmap(const char *sym, void *addr, size_t len, int prot, int flags, int fd,
		     off_t off)
{
	struct fd_ident id;
	uint8_t req[48], reply[8], done[24];
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	long ret;
	int saved, memfd;
	void *p;

	if (fd < 0 || (flags & MAP_ANONYMOUS))
		return REAL(mmap_fn, sym)(addr, len, prot, flags, fd, off);
	switch (fd_kind(fd, &id)) {
	case KIND_NONE:
		return REAL(mmap_fn, sym)(addr, len, prot, flags, fd, off);
	case KIND_FAILNTH:
	case KIND_OBJECT:
		errno = ENODEV; /* files without an mmap op */
		return MAP_FAILED;
	}
	/* The generic mmap checks come before the file's own. */
	if (len == 0 || (off & (off_t)(page - 1))) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	len = (len + page - 1) & ~(page - 1);
	memcpy(req, id.secret, SECRET_SIZE);
	put32(req, 16, (uint32_t)getpid());
	put32(req, 20, (uint32_t)my_tid());
	put64(req, 24, (uint64_t)len);
	put64(req, 32, (uint64_t)off / page);
	put32(req, 40, (uint32_t)prot);
	put32(req, 44, (uint32_t)flags);
	ret = call(OP_MMAP, req, sizeof(req), reply, sizeof(reply));
	if (ret < 0) {
		errno = (int)-ret;
		return MAP_FAILED;
	}
	/* The region becomes a memfd we map shared and the daemon opens too (through
	 * /proc/<pid>/fd), keeping it equal to the region; without one, anonymous shared memory
	 * the daemon fills once through /proc/<pid>/mem. */
#ifdef SYS_memfd_create
	memfd = (int)syscall(SYS_memfd_create, "iommusim-mmap", 1U /* MFD_CLOEXEC */);
#else
	memfd = -1;
#endif
	if (memfd >= 0 && ftruncate(memfd, (off_t)len) != 0) {
		raw_close(memfd);
		memfd = -1;
	}
	if (memfd >= 0)
		p = REAL(mmap_fn, sym)(addr, len, prot, (flags & ~0xf) | MAP_SHARED, memfd, 0);
	else
		p = REAL(mmap_fn, sym)(addr, len, prot, (flags & ~0xf) | MAP_SHARED | MAP_ANONYMOUS,
				       -1, 0);
	saved = errno;
	memcpy(done, reply, 4);
	put32(done, 4, (uint32_t)getpid());
	put64(done, 8, p == MAP_FAILED ? 0 : (uint64_t)(uintptr_t)p);
	put32(done, 16, (uint32_t)(p == MAP_FAILED ? -1 : memfd));
	put32(done, 20, 0);
	call(OP_MMAP_ADDR, done, sizeof(done), NULL, 0);
	if (memfd >= 0)
		raw_close(memfd); /* the mapping and the daemon's descriptor keep the file */
	errno = saved;
	if (p != MAP_FAILED) {
		pthread_mutex_lock(&ctl_lock);
		for (int i = 0; i < MMAP_SLOTS; i++) {
			if (mmaps[i].len == 0) {
				mmaps[i].addr = (uintptr_t)p;
				mmaps[i].len = len;
				memcpy(mmaps[i].secret, id.secret, SECRET_SIZE);
				__atomic_add_fetch(&mmap_count, 1, __ATOMIC_RELAXED);
				break;
			}
		}
		pthread_mutex_unlock(&ctl_lock);
	}
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = do_mmap("mmap", addr, len, prot, flags, fd, off);
	maps_changed(); /* even a failed MAP_FIXED may have unmapped what was there */
	return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = do_mmap("mmap64", addr, len, prot, flags, fd, off);
	maps_changed();
	return p;
}

int munmap(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	struct mmap_slot hit = {0};

	if (__atomic_load_n(&mmap_count, __ATOMIC_RELAXED) == 0) {
		int r = REAL(munmap_fn, "munmap")(addr, len);
		maps_changed();
		return r;
	}
	pthread_mutex_lock(&ctl_lock);
	for (int i = 0; i < MMAP_SLOTS; i++) {
		if (mmaps[i].len && a < mmaps[i].addr + mmaps[i].len && mmaps[i].addr < a + len) {
			hit = mmaps[i];
			mmaps[i].len = 0;
			__atomic_sub_fetch(&mmap_count, 1, __ATOMIC_RELAXED);
			break;
		}
	}
	pthread_mutex_unlock(&ctl_lock);
	if (hit.len) {
		uint8_t req[40];
		memcpy(req, hit.secret, SECRET_SIZE);
		put32(req, 16, (uint32_t)getpid());
		put32(req, 20, (uint32_t)my_tid());
		put64(req, 24, (uint64_t)hit.addr);
		put64(req, 32, (uint64_t)hit.len);
		call(OP_MUNMAP, req, sizeof(req), NULL, 0);
	}
	int r = REAL(munmap_fn, "munmap")(addr, len);
	maps_changed();
	return r;
}

/* ---- other calls that change the mappings: only the map generation moves ----------------- */

typedef void *(*mremap_fn)(void *, size_t, size_t, int, ...);
typedef int (*mprotect_fn)(void *, size_t, int);
typedef int (*pkey_mprotect_fn)(void *, size_t, int, int);
typedef int (*brk_fn)(void *);
typedef void *(*sbrk_fn)(intptr_t);
typedef void *(*shmat_fn)(int, const void *, int);
typedef int (*shmdt_fn)(const void *);
typedef int (*remap_file_pages_fn)(void *, size_t, int, size_t, int);

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = NULL, *p;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	p = REAL(mremap_fn, "mremap")(old, old_len, new_len, flags, new_addr);
	maps_changed();
	return p;
}

int mprotect(void *addr, size_t len, int prot)
{
	int r = REAL(mprotect_fn, "mprotect")(addr, len, prot);
	maps_changed();
	return r;
}

int pkey_mprotect(void *addr, size_t len, int prot, int pkey)
{
	int r = REAL(pkey_mprotect_fn, "pkey_mprotect")(addr, len, prot, pkey);
	maps_changed();
	return r;
}

int brk(void *end)
{
	int r = REAL(brk_fn, "brk")(end);
	maps_changed();
	return r;
}

void *sbrk(intptr_t delta)
{
	void *p = REAL(sbrk_fn, "sbrk")(delta);
	if (delta)
		maps_changed();
	return p;
}

void *shmat(int id, const void *addr, int flags)
{
	void *p = REAL(shmat_fn, "shmat")(id, addr, flags);
	maps_changed();
	return p;
}

int shmdt(const void *addr)
{
	int r = REAL(shmdt_fn, "shmdt")(addr);
	maps_changed();
	return r;
}

int remap_file_pages(void *addr, size_t size, int prot, size_t pgoff, int flags)
{
	int r = REAL(remap_file_pages_fn, "remap_file_pages")(addr, size, prot, pgoff, flags);
	maps_changed();
	return r;
}
