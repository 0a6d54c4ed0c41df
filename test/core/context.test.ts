import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IommufdContext } from "../../src/core/context.ts";
import { IommufdObject, ObjType, refGet } from "../../src/core/object.ts";
import { FakeProcess } from "../../src/core/user_mm.ts";
import { EBUSY, EFAULT, ENOENT, ENOTTY } from "../../src/errno.ts";
import { IO, IOMMU_DESTROY, IOMMUFD_TYPE } from "../../src/uapi/ioctl.ts";

class Dummy extends IommufdObject {
  readonly type = ObjType.IOAS;
  destroyed = false;
  destroy(): void {
    this.destroyed = true;
  }
}

function destroyArg(p: FakeProcess, id: number): bigint {
  const va = p.mmap(4096);
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, 8, true);
  new DataView(b.buffer).setUint32(4, id, true);
  p.write(va, b);
  return va;
}

describe("iommufd context", () => {
  it("runs IOMMU_DESTROY through the codec with the kernel's errnos", () => {
    const ctx = new IommufdContext();
    const p = new FakeProcess();
    const a = ctx.table.reserve(new Dummy());
    ctx.table.finalize(a);
    const b = ctx.table.reserve(new Dummy());
    ctx.table.finalize(b);
    refGet(b);
    assert.equal(ctx.ioctl(IOMMU_DESTROY, destroyArg(p, 99), p).errno, ENOENT);
    assert.equal(ctx.ioctl(IOMMU_DESTROY, destroyArg(p, b.id), p).errno, EBUSY);
    assert.equal(ctx.ioctl(IOMMU_DESTROY, 0n, p).errno, EFAULT);
    assert.equal(ctx.ioctl(IOMMU_DESTROY, destroyArg(p, a.id), p).errno, 0);
    assert.ok(a.destroyed);
    assert.equal(ctx.ioctl(IO(IOMMUFD_TYPE, 0x7f), destroyArg(p, 1), p).errno, ENOTTY);
  });

  it("destroys everything on close", () => {
    const ctx = new IommufdContext();
    const a = ctx.table.reserve(new Dummy());
    ctx.table.finalize(a);
    assert.deepEqual(ctx.close(), []);
    assert.ok(a.destroyed);
    assert.equal(ctx.table.size, 0);
  });
});
