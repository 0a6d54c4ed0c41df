/**
 * Linux errno values (asm-generic/errno-base.h and errno.h) used across the layers.
 * The uAPI reports these numbers exactly; the library layers throw or return them.
 */
export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EIO = 5;
export const ENXIO = 6;
export const E2BIG = 7;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSPC = 28;
export const ESPIPE = 29;
export const ERANGE = 34;
export const EMFILE = 24;
export const ENOTTY = 25;
export const EMSGSIZE = 90;
export const EOPNOTSUPP = 95;
export const EADDRINUSE = 98;
export const EOVERFLOW = 75;
export const EBADFD = 77;
export const ENOSYS = 38;
/** EDEADLK; the kernel spells it EDEADLOCK where iommufd gives up retrying an unmap. */
export const EDEADLOCK = 35;
/** Invalid exchange: the selftest's ACCESS_PAGES page-identity mismatch. */
export const EBADE = 52;

const NAMES: Record<number, string> = {
  [EPERM]: "EPERM",
  [ENOENT]: "ENOENT",
  [ESRCH]: "ESRCH",
  [EINTR]: "EINTR",
  [EIO]: "EIO",
  [ENXIO]: "ENXIO",
  [E2BIG]: "E2BIG",
  [EBADF]: "EBADF",
  [EAGAIN]: "EAGAIN",
  [ENOMEM]: "ENOMEM",
  [EACCES]: "EACCES",
  [EFAULT]: "EFAULT",
  [EBUSY]: "EBUSY",
  [EEXIST]: "EEXIST",
  [ENODEV]: "ENODEV",
  [EINVAL]: "EINVAL",
  [ENOSPC]: "ENOSPC",
  [ESPIPE]: "ESPIPE",
  [ERANGE]: "ERANGE",
  [EMFILE]: "EMFILE",
  [ENOTTY]: "ENOTTY",
  [EMSGSIZE]: "EMSGSIZE",
  [EOPNOTSUPP]: "EOPNOTSUPP",
  [EADDRINUSE]: "EADDRINUSE",
  [EOVERFLOW]: "EOVERFLOW",
  [EBADFD]: "EBADFD",
  [ENOSYS]: "ENOSYS",
  [EDEADLOCK]: "EDEADLOCK",
  [EBADE]: "EBADE",
};

export function errnoName(e: number): string {
  return NAMES[e] ?? `errno ${e}`;
}

/** An error carrying a Linux errno; thrown inside the library, turned into a return code at the uAPI. */
export class ErrnoError extends Error {
  readonly errno: number;
  constructor(errno: number, message: string) {
    // An errno is ordinary control flow (the kernel's return codes), not a bug: capturing a
    // stack trace for each made a failing ioctl cost ~10 us. Bugs throw plain Errors instead.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(`${errnoName(errno)}: ${message}`);
    Error.stackTraceLimit = limit;
    this.name = "ErrnoError";
    this.errno = errno;
  }
}
