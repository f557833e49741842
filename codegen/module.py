"""Build one LLVM module for a model: a function per kernel and an entry point per schedule."""

from __future__ import annotations

import math
from typing import Any

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import attrs_key
from graphc.ir.plan import ALIGN, Kernel, Schedule, gemm_result
from graphc.ir.types import BATCH, DTYPE_INFO

from . import kernels as K
from .checks import InputCheck, emit_input_checks
from .fpenv import flush_bits, has_flush_mode, read_mode, write_mode
from .gemm import Blocking, emit_gemm, packed_scratch_bytes, scratch_bound
from .kernels import ENTRY_TYPE, KernelContext, epilogue_for, storage_key
from .lltypes import I8, I32, I64, LL, PTR, glue, i64
from .loops import loop
from .target import Target, as_target, vector_unit
from .threads import ThreadPool, declare_thread_pool, thread_pool

# The entries that train run with subnormals flushed to zero (codegen/fpenv.py); the epochs
# call them. Inference (infer, evaluate) keeps IEEE subnormals.
FLUSH_ENTRIES = frozenset({"train_step", "train_grads", "apply_update"})


class ModuleBuilder:
    """Accumulates entry points (``NAME_train_step``, ``NAME_infer``, ...) into one ir.Module,
    or, for the JIT, into one module plus modules of matmul kernels and GEMMs (``parts()``)."""

    def __init__(
        self,
        name: str,
        *,
        target_cpu: str | Target = "native",
        check_numerics: bool = False,
        gemm_modules: int = 0,
        keep_grads: bool = True,
    ) -> None:
        """``gemm_modules`` > 0: the matmul kernels and their GEMM functions go into that many
        more modules (``gemm_parts``; the kernels as external symbols, declared in ``module``;
        the GEMMs spread over them in turn), so that the JIT optimizes them with a cheaper
        pipeline and compiles the modules in parallel (``codegen.target.compile_parts``).
        0: one module. A kernel and its GEMM always share a module: LLVM propagates the
        kernel's constant N and K into the GEMM and drops the paths they rule out (a third of
        the GEMM's code).

        With GEMM modules, code written as it runs (vectors by hand, loops marked against
        LLVM's vectorizer: the input checks' scans, codegen/checks.py, and the kernels
        ``kernels.written_as_run`` names) also goes into a module of its own, ``lean``, which
        the JIT optimizes with a short list of passes (``codegen.target.PIPELINES["lean"]``):
        O3's loop passes found nothing to do in it and cost some 3-10 ms per function.

        ``keep_grads``: train_step leaves every gradient in its grad region (an exported
        library's header publishes where: NAME_GRAD_*). False (the JIT, whose callers never
        read them): a gradient that only its optimizer update reads, fused into the epilogue
        of the GEMM that makes it (fuse_update_epilogue), is never stored (emit_gemm's
        c_unread): at batch 32 the 784 x 256 gradient's 800 KB were written every step."""
        self.name = name
        self.keep_grads = keep_grads
        self.check_numerics = check_numerics  # scan each kernel's stores for NaN/Inf
        self.target = as_target(target_cpu)  # every target decision below reads this
        self.module = ir.Module(name=name)
        self.gemm_parts = [ir.Module(name=f"{name}.gemm{i}") for i in range(gemm_modules)]
        self.lean = ir.Module(name=f"{name}.lean") if gemm_modules else None
        for m in (self.module, *self.gemm_parts, *([self.lean] if self.lean else [])):
            m.triple = self.target.llvm_triple  # codegen/threads.py reads it (x86 pause)
        unit = vector_unit(self.target)
        self.vector_width = unit.lanes
        self.vector_registers = unit.registers
        self.entries: dict[str, Schedule] = {}
        self.entry_checks: dict[str, list[InputCheck]] = {}  # the checks of each entry
        self._kernels: dict[tuple, ir.Function] = {}  # structural signature -> kernel function
        self.kernels_reused = 0
        self._gemms: dict[tuple, ir.Function] = {}  # GEMM functions by what their code depends on
        self._fixed: dict[tuple, dict[str, int]] = {}  # their constant dimensions (plan_gemms)
        self._families: dict[tuple, ir.Module] = {}  # GEMM module by family (see _gemm_part)

    def parts(self) -> list[tuple[ir.Module, str]]:
        """The modules to compile with the pipeline each needs ("main", "gemm" or "lean"; see
        ``codegen.target.PIPELINES``): ``module``, then the GEMM modules that hold code, then
        ``lean`` when it does."""
        lean = [(self.lean, "lean")] if self.lean is not None and self.lean.functions else []
        return (
            [(self.module, "main")] + [(m, "gemm") for m in self.gemm_parts if m.functions] + lean
        )

    def add_epoch_entry(self, step_entry: str = "train_step") -> ir.Function:
        """Emit ``NAME_train_epoch``: mini-batches gathered by an index array, each one a call of
        ``NAME_<step_entry>`` (added before); ABI in ``codegen/epoch.py``."""
        from .epoch import emit_train_epoch

        fname = f"{self.name}_{step_entry}"
        body = self.module.globals.get(f"{fname}_unchecked")  # the body, when fname scans
        checked = self.module.get_global(fname)
        return emit_train_epoch(
            self.module,
            f"{self.name}_train_epoch",
            body or checked,
            self.entries[step_entry],
            self.entry_checks.get(step_entry, []) if body is not None else [],
            self.pool(self.module),
            self.lean,
        )

    def add_split_epoch_entry(self) -> ir.Function:
        """Emit ``NAME_train_epoch_split``: a rank's data-parallel epoch over the entries
        ``train_grads`` (its body, with its row checks for the first epoch's scan) and
        ``apply_update`` (added before) with an all-reduce call-out between them; ABI in
        ``codegen/epoch.py``."""
        from .epoch import emit_train_epoch_split

        g = f"{self.name}_train_grads"
        body = self.module.globals.get(f"{g}_unchecked")  # the body, when train_grads scans
        grads = body or self.module.get_global(g)
        update = self.module.get_global(f"{self.name}_apply_update")
        return emit_train_epoch_split(
            self.module,
            f"{self.name}_train_epoch_split",
            grads,
            update,
            self.entries["train_grads"],
            self.entry_checks.get("train_grads", []) if body is not None else [],
            self.lean,
        )

    def add_update_shard_entry(self) -> ir.Function | None:
        """Emit ``NAME_apply_update_shard`` when ``apply_update`` (added before) can run by
        shards (codegen.epoch.update_shard_plan; else None)::

            int32_t NAME_apply_update_shard(void *params, void *state, void *workspace,
                void *const *inputs, int64_t lo, int64_t hi, void *const *grads, int64_t ranks)

        ``apply_update``'s kernels, the flat update kernel over elements ``lo <= i < hi`` only
        (``lo`` and ``hi`` multiples of the plan's line, or ``hi`` = all elements): the scalar
        kernels (step counter, bias corrections) run whole. The gradient of element ``i`` is
        first summed over the ranks: ``grads[0..ranks-1]`` point at element 0 of the ranks'
        gradients (NAME_reduce_slots' order: ``((g0 + g1) + ...) + g[ranks-1]``): in
        registers as the update reads them for 2 to SUMMED_RANKS ranks, else by blocks of
        SHARD_BLOCK elements summed into a block on the stack and updated from there while
        it is in the L1 cache (the workspace's own gradient is only read, as ``grads[j]``
        where it is one of them; the sums are never stored back to memory). Each
        element gets the arithmetic of the all-reduce and ``apply_update``, so one call over
        all elements, or the shards of all ranks together, equal the sum and one
        ``apply_update`` bit for bit (runtime.distributed: ranks that share memory each run
        it over all of their own parameters, the summed update, or over a shard of
        parameters in a shared-memory window, GRAPHC_MPI_SHARD=1). Returns 0, or a
        check_numerics code of its scalar kernels (no input checks: the caller checks ``lr``).
        """
        from .epoch import SHARD_TYPE, update_shard_plan

        sched = self.entries.get("apply_update")
        plan = update_shard_plan(sched) if sched is not None else None
        if sched is None or plan is None or f"{self.name}_reduce_slots" not in self.module.globals:
            return None
        fname = f"{self.name}_apply_update_shard"
        if has_flush_mode(self.module):
            body = self._add_body(fname, sched, f"{fname}.ieee", shard=plan, ftype=SHARD_TYPE)
            return self._flushing(body, fname)
        return self._add_body(fname, sched, fname, shard=plan, ftype=SHARD_TYPE)

    def add_entry(
        self,
        entry: str,
        sched: Schedule,
        checks: list[InputCheck] | tuple = (),
        *,
        prefix: str | None = None,
    ) -> ir.Function:
        """Emit ``int32_t NAME_entry(params, state, workspace, inputs, outputs, n)``.

        ``checks`` (codegen/checks.py): the entry first scans those inputs and returns
        ``CHECK_BASE + slot`` for the first that fails, before any kernel runs; the body alone
        is then also emitted as ``NAME_entry_unchecked``. ``prefix`` replaces NAME: several
        programs in one module (graphc.fuzz builds many small models at once, sharing
        identical kernels and GEMMs and LLVM's fixed costs)."""
        fname = f"{prefix or self.name}_{entry}"
        self.entries[entry] = sched
        self.entry_checks[entry] = list(checks)
        body_name = f"{fname}_unchecked" if checks else fname
        if entry in FLUSH_ENTRIES and has_flush_mode(self.module):
            body = self._flushing(self._add_body(fname, sched, f"{body_name}.ieee"), body_name)
        else:
            body = self._add_body(fname, sched, body_name)
        if not checks:
            return body
        fn = glue(ir.Function(self.module, ENTRY_TYPE, name=fname))  # the scans do the work
        for a, nm in zip(fn.args, ("params", "state", "workspace", "inputs", "outputs", "n")):
            a.name = nm
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        n = fn.args[5]
        slot_of = {v: i for i, v in enumerate(sched.input_slots)}
        scans = []
        for c in checks:
            t = sched.graph[c.name].type
            count: ir.Value = i64(1)
            for d in t.shape:
                count = b.mul(count, n if d == BATCH else i64(int(d)))
            scans.append((slot_of[c.name], c, t.dtype, count))
        emit_input_checks(b, self.module, scans, fn.args[3], self.pool(self.module), self.lean)
        b.ret(b.call(body, list(fn.args), tail=True))
        return fn

    def _flushing(self, body: ir.Function, name: str) -> ir.Function:
        """A function ``name`` that calls ``body`` (made internal, never inlined) with
        subnormals flushed to zero and restores the caller's floating-point control register
        before it returns (codegen/fpenv.py)."""
        body.linkage = "internal"
        body.attributes.add("noinline")  # no arithmetic may move across the mode switches
        fn = glue(ir.Function(self.module, body.function_type, name=name))
        for a, src in zip(fn.args, body.args):
            a.name = src.name
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        caller = read_mode(b, self.module)
        write_mode(b, self.module, b.or_(caller, ir.Constant(I64, flush_bits(self.module))))
        rc = b.call(body, list(fn.args))
        write_mode(b, self.module, caller)
        b.ret(rc)
        return fn

    def _add_body(
        self,
        prefix: str,
        sched: Schedule,
        fname: str,
        shard: Any = None,
        ftype: ir.FunctionType = ENTRY_TYPE,
    ) -> ir.Function:
        """The entry's kernels in order (kernel functions named after ``prefix``). ``shard``
        (a codegen.epoch.ShardPlan; ``ftype`` then SHARD_TYPE): the flat update kernel over
        the elements ``lo..hi`` of the function's last two arguments only (see
        add_update_shard_entry)."""
        fn = glue(ir.Function(self.module, ftype, name=fname))  # one call per kernel
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if shard is None:
            params, state, ws, inputs, outputs, n = fn.args
            names: tuple[str, ...] = ("params", "state", "workspace", "inputs", "outputs", "n")
        else:  # apply_update reads no rows and has no outputs
            params, state, ws, inputs, lo, hi, srcs, ranks = fn.args
            names = ("params", "state", "workspace", "inputs", "lo", "hi", "grads", "ranks")
            n, outputs = i64(1), ir.Constant(PTR, None)
        for a, nm in zip(fn.args, names):
            a.name = nm
        cache: dict[tuple, ir.Value] = {}

        def base(v: str) -> ir.Value:
            buf = sched.buffers[v]
            key = storage_key(buf)
            if key in cache:
                return cache[key]
            if buf.region in ("input", "output"):
                arr = inputs if buf.region == "input" else outputs
                p = b.load(
                    b.gep(arr, [i64(buf.slot)], source_etype=PTR),
                    typ=PTR,
                    name=f"{buf.region}{buf.slot}",
                )
            else:
                root = {"param": params, "state": state, "grad": ws, "arena": ws}[buf.region]
                off: ir.Value = i64(buf.offset)
                if buf.offset_row:
                    off = b.add(off, b.mul(n, i64(buf.offset_row)))
                p = b.gep(root, [off], inbounds=True, source_etype=I8, name=K.llname(v))
            cache[key] = p
            return p

        def out_ptr(spec: str) -> ir.Value:
            slot = int(spec.split(":")[1])
            return b.load(
                b.gep(outputs, [i64(slot)], source_etype=PTR), typ=PTR, name=f"output{slot}"
            )

        scratch: list[ir.Value] = []  # the pointer, made at the first matmul kernel

        def scratch_ptr(kernel: Kernel) -> ir.Value:
            """The workspace's scratch (after the arena; see scratch_bytes), rounded up to
            ALIGN bytes: the workspace itself need only be MIN_ALIGN-aligned."""
            need = self._scratch_need(sched, kernel)
            if need and need + ALIGN > sched.scratch_bytes:
                raise CodegenError(
                    f"{fname}: kernel {kernel.name} needs {need} + {ALIGN} bytes of GEMM "
                    f"scratch, the schedule has {sched.scratch_bytes} (a graphc bug: the "
                    "compiler sets it with codegen.module.scratch_bytes)"
                )
            if not scratch:
                off = b.add(i64(sched.scratch_offset(0)), b.mul(n, i64(sched.arena_row)))
                p = b.gep(ws, [off], inbounds=True, source_etype=I8)
                pad = b.and_(b.neg(b.ptrtoint(p, I64)), i64(ALIGN - 1))
                scratch.append(b.gep(p, [pad], inbounds=True, source_etype=I8, name="scratch"))
            return scratch[0]

        sites: dict[int, list[tuple[int, str]]] = {}
        if self.check_numerics:
            for i, (v, k) in enumerate(K.numerics_sites(sched)):
                sites.setdefault(k, []).append((i, v))
        for kidx, kernel in enumerate(sched.kernels):
            if shard is not None and kidx == shard.kernel:
                self._call_shard(prefix, sched, kernel, shard, base, b, (lo, hi, srcs, ranks))
                continue
            kfn, values, _extra_ptrs = self._emit_kernel(
                prefix, sched, kernel, out_ptr_needed=kernel.kind == "copy"
            )
            args = [base(v) for v in K.distinct_buffers(sched, values)]
            if kernel.kind == "copy":
                dst = kernel.copy_to
                assert dst is not None  # every copy kernel names its destination
                args.append(out_ptr(dst) if dst.startswith("output:") else base(dst))
            elif kernel.kind in K.GEMM_KINDS:  # the GEMM's packed blocks (codegen/gemm.py)
                args.append(scratch_ptr(kernel))
            b.call(kfn, args + [n])
            for i, v in sites.get(kidx, ()):  # check_numerics: return the site's code at a NaN/Inf
                t = sched.graph[v].type
                count: ir.Value = i64(1)
                for d in t.shape:
                    count = b.mul(count, n if d == "N" else i64(int(d)))
                first = b.call(K.nonfinite_scanner(self.module, t.dtype), [base(v), count])
                with b.if_then(b.icmp_signed(">=", first, i64(0)), likely=False):
                    b.ret(ir.Constant(I32, K.NUMERICS_BASE + i))
        b.ret(ir.Constant(I32, 0))
        return fn

    def _call_shard(
        self,
        prefix: str,
        sched: Schedule,
        kernel: Kernel,
        plan: Any,
        base: Any,
        b: ir.IRBuilder,
        at: tuple[ir.Value, ...],
    ) -> None:
        """Emit the flat update kernel's shard variants (their loop over ``n`` elements,
        full-size pointers at the first) and their calls over ``lo..hi``: for 2 to
        SUMMED_RANKS ranks one variant that loads each gradient element as the sum of the
        ranks' (rank order, in registers: one pass over the slots, the parameters and the
        state); for other counts, by blocks of SHARD_BLOCK elements, the sum of the ranks'
        gradients (NAME_reduce_slots, into a stack block the variant reads as its gradient)
        and a call of the variant. Both give each element the same arithmetic."""
        from .epoch import SHARD_BLOCK, SUMMED_RANKS, shard_values

        lo, hi, srcs, ranks = at
        g = sched.graph
        values = shard_values(sched, kernel)
        ctx = KernelContext(self.module, f"{prefix}.{kernel.name}.shard", sched, values)
        ctx.shard = True  # no thread pool: a block is far below PARALLEL_MIN_ELEMENTS
        K.emit_elementwise(ctx, kernel)
        reduce_slots = self.module.get_global(f"{self.name}_reduce_slots")
        shape = g[kernel.nodes[-1]].type.shape
        bufs = K.distinct_buffers(sched, values)
        ptrs = [(base(v), g[v].type.shape == shape) for v in bufs]
        # the summed gradient goes to a block on the stack (L1), not back to memory
        summed = [
            sched.buffers[v].region == "grad" and sched.buffers[v].offset == plan.offset("grad")
            for v in bufs
        ]
        grad_key = K.storage_key(sched.buffers[bufs[summed.index(True)]])
        skip_lo = b.mul(lo, i64(plan.itemsize), name="lo_bytes")
        full_args = [
            b.gep(p, [skip_lo], inbounds=True, source_etype=I8) if full else p for p, full in ptrs
        ]
        blocks_bb = b.append_basic_block("sum_blocks")
        done_bb = b.append_basic_block("summed")
        switch = b.switch(ranks, blocks_bb)
        for k in range(2, SUMMED_RANKS + 1):
            kctx = KernelContext(
                self.module, f"{prefix}.{kernel.name}.sum{k}", sched, values, extra_ptrs=k
            )
            kctx.shard = True  # no thread pool: each rank runs one thread (distributed fit)
            kctx.summed = {v: kctx.extra for v in values if kctx.key_of.get(v) == grad_key}
            K.emit_elementwise(kctx, kernel)
            bb = b.append_basic_block(f"sum{k}")
            switch.add_case(i64(k), bb)
            b.position_at_end(bb)
            slots = [
                b.gep(
                    b.load(b.gep(srcs, [i64(j)], inbounds=True, source_etype=PTR), typ=PTR),
                    [skip_lo], inbounds=True, source_etype=I8,
                )
                for j in range(k)
            ]  # fmt: skip
            b.call(kctx.fn, full_args + slots + [b.sub(hi, lo)])
            b.branch(done_bb)
        b.position_at_end(blocks_bb)
        with b.goto_entry_block():
            own = b.alloca(PTR, size=1, name="own_grad")
            block = b.alloca(I8, size=SHARD_BLOCK * plan.itemsize, name="grad_block")
            block.align = 64
        at_block = b.ptrtoint(block, I64)
        todo = b.sub(hi, lo, name="shard_n")
        blocks = b.sdiv(b.add(todo, i64(SHARD_BLOCK - 1)), i64(SHARD_BLOCK), name="blocks")
        with loop(b, blocks, name="blk") as blk:
            start = b.add(lo, b.mul(blk, i64(SHARD_BLOCK)), name="start")
            left = b.sub(hi, start)
            n = b.select(b.icmp_signed("<", left, i64(SHARD_BLOCK)), left, i64(SHARD_BLOCK))
            skip = b.mul(start, i64(plan.itemsize), name="shard_bytes")
            # reduce_slots stores element i at dst + i: dst = block - start elements
            b.store(b.inttoptr(b.sub(at_block, skip), PTR), own)
            b.call(reduce_slots, [srcs, ranks, own, i64(1), start, b.add(start, n)])
            args = [
                block if into else b.gep(p, [skip], inbounds=True, source_etype=I8) if full else p
                for (p, full), into in zip(ptrs, summed)
            ]
            b.call(ctx.fn, args + [n])
        b.branch(done_bb)
        b.position_at_end(done_bb)

    def _emit_kernel(self, prefix: str, sched: Schedule, kernel: Kernel, out_ptr_needed: bool):
        """The kernel's function (reused when an identical kernel was emitted before, e.g. the
        forward GEMMs shared by train_step, eval and infer), its values, its extra pointers."""
        g = sched.graph
        values: list[str] = []
        for name in kernel.nodes:
            nd = g[name]
            for i in nd.inputs:
                if i not in values:
                    values.append(i)
            values.append(name)
        sig = kernel_signature(sched, kernel, values)
        if sig in self._kernels:
            self.kernels_reused += 1
            return self._kernels[sig], ([kernel.nodes[0]] if kernel.kind == "copy" else values), []
        fn, vals, extra = self._emit_new_kernel(prefix, sched, kernel, values)
        self._kernels[sig] = fn
        return fn, vals, extra

    def _emit_new_kernel(self, prefix: str, sched: Schedule, kernel: Kernel, values: list[str]):
        g = sched.graph
        fname = f"{prefix}.{kernel.name}"
        if kernel.kind == "copy":
            src = kernel.nodes[0]
            ctx = KernelContext(self.module, fname, sched, [src], extra_ptrs=1)
            K.emit_copy(ctx, src, ctx.extra[0], ctx.count(g[src].type.shape))
            return ctx.fn, [src], ctx.extra
        module = self.module
        if kernel.kind in K.GEMM_KINDS and self.gemm_parts:
            key = self._gemm_key(sched, kernel, *K.matmul_parts(g, kernel)[1:])
            module = self._gemms[key].module if key in self._gemms else self._gemm_part(key)
        elif self.lean is not None and K.written_as_run(g, kernel):
            module = self.lean
        extra = 1 if kernel.kind in K.GEMM_KINDS else 0  # the GEMM's work buffer (emit_matmul)
        ctx = KernelContext(module, fname, sched, values, extra_ptrs=extra, pool=self.pool(module))
        ctx.gemm_for = lambda *a: self._gemm_for(fname, module, sched, *a)
        emit = K.KERNEL_EMITTERS.get(kernel.kind)
        if emit is None:
            op = g[kernel.nodes[0]].op
            raise CodegenError(f"no kernel for {kernel.kind} kernel {kernel.name} ({op})")
        emit(ctx, kernel)
        if module is not self.module:  # defined in a GEMM or the lean module, declared here
            ctx.fn.linkage = ""
            return ir.Function(self.module, ctx.fn.function_type, name=fname), values, []
        return ctx.fn, values, []

    def plan_gemms(self, schedules) -> None:
        """Find, for every GEMM function the schedules will share, the dimensions that are the
        same constant in all its kernels: emit_gemm(fixed=...) builds them into its code."""
        dims: dict[tuple, set[tuple]] = {}
        for sched in schedules:
            g = sched.graph
            for kernel in sched.kernels:
                if kernel.kind not in K.GEMM_KINDS:
                    continue
                mm, tail, dtype, ta, tb, ext = K.matmul_parts(g, kernel)
                key = self._gemm_key(sched, kernel, tail, dtype, ta, tb, ext)
                dims.setdefault(key, set()).add(_matmul_dims(sched, mm))
        self._fixed = {}
        for key, seen in dims.items():
            values = [{x[k] for x in seen} for k in range(3)]
            fixed = {
                d: next(iter(v))
                for d, v in zip("MNK", values)
                if len(v) == 1 and isinstance(next(iter(v)), int)
            }
            if all(isinstance(m, int) for m in values[0]):  # M is no batch size anywhere
                fixed["min_M"] = min(values[0])
            self._fixed[key] = fixed

    def _gemm_part(self, key: tuple) -> ir.Module:
        """The GEMM module for a new GEMM function (``key``: ``_gemm_key``'s): the one that
        holds its family (same dtype, transposes and register tile), whose packing helpers it
        shares (each module defines its own: the transposing B packer of a 6x64 tile alone is
        about 0.1 s of machine code generation); else, or when that module is ahead of the
        least loaded one by more than an average GEMM, the least loaded one (instructions
        emitted so far), so that the modules, compiled in parallel, stay about even."""
        loads = {id(m): _instructions(m) for m in self.gemm_parts}
        least = min(self.gemm_parts, key=lambda m: loads[id(m)])
        family = self._families.get(key[:4])
        done = len(self._gemms)
        mean = sum(loads.values()) / done if done else 0
        if family is None or loads[id(family)] > loads[id(least)] + mean:
            family = self._families[key[:4]] = least
        return family

    def pool(self, module: ir.Module) -> ThreadPool:
        """The program's thread pool, as ``module``'s code reaches it: defined in the lean
        module when there is one (its scalar code has nothing for O3's loop passes: some 11
        ms of compile time there, the same machine code but for the order of some blocks),
        else in the main module; declared in the others (linked together by the JIT)."""
        home = self.lean if self.lean is not None else self.module
        pool = thread_pool(home, self.name)
        return pool if module is home else declare_thread_pool(module, self.name)

    def _blocking(self, mm, dtype: str) -> Blocking:
        """The GEMM tile for a matmul node on this target: it follows the node's N when fixed
        (Blocking.for_dtype), and is given to emit_gemm as is, so that kernels sharing a GEMM
        (same key, perhaps different N) get the tile their key promises."""
        n = mm.type.shape[-1]
        n = n if isinstance(n, int) else None
        return Blocking.for_dtype(dtype, self.vector_width, self.vector_registers, n)

    def _scratch_need(self, sched: Schedule, kernel: Kernel) -> int:
        """Bytes of work buffer the kernel's GEMM uses on this target (packed_scratch_bytes)."""
        mm, _tail, dtype, ta, tb, _ext = K.matmul_parts(sched.graph, kernel)
        dims = _matmul_dims(sched, mm)
        size = DTYPE_INFO[dtype].itemsize
        return packed_scratch_bytes(self._blocking(mm, dtype), size, ta, tb, *dims)

    def _gemm_key(self, sched, kernel, tail, dtype, ta, tb, ext) -> tuple:
        """What a kernel's GEMM code depends on: the transposes, the epilogue's ops and its
        operands' shapes, the register tile its N calls for (Blocking.for_dtype; not M, N, K,
        which are arguments): kernels that agree share one.

        A @ B^T products (the backward products dX = dY @ W^T of dense layers) leave out N
        and their operands' sizes (how the epilogue reads them stays): the layers of several
        widths then share one GEMM instead of compiling one each (about 0.15 s of a cold
        compile of 784-256-128-10; the packed path runs the same with N and K as arguments).
        The others keep them: built in, N and K make the batch-1 path of a forward product (a
        GEMV streaming B) about 5 % faster."""
        g = sched.graph
        inline = {v for v in ext if sched.buffers[v].region == "inline"}
        mm = g[kernel.nodes[0]]
        blk = self._blocking(mm, dtype)
        pos = {
            **{v: ("x", i) for i, v in enumerate(ext)},
            mm.name: ("mm",),
            **{t.name: ("t", i) for i, t in enumerate(tail)},
        }
        return (
            dtype,
            ta,
            tb,
            (blk.mr, blk.nv),
            None if tb or not tail else mm.type.shape[-1],
            tuple(
                (t.op, attrs_key(t.attrs), t.type.dtype, tuple(pos[i] for i in K.data_operands(t)))
                for t in tail
            ),
            tuple(
                ("store", pos[v])  # a value the epilogue stores besides C (an update)
                if v in pos and pos[v][0] == "t"
                else (v in inline, g[v].type.dtype, K.epilogue_strides(g[v].type.shape))
                if tb
                else (v in inline, g[v].type)
                for v in ext
            ),
            pos[gemm_result([mm, *tail])],  # what C holds
        )

    def _gemm_for(self, fname, module, sched, kernel, dtype, ta, tb, tail, ext):
        """A GEMM function for this kernel, in ``module`` (the kernel's):
        (M, N, K, A, B, C, extra operands of the epilogue)."""
        g = sched.graph
        inline = {v for v in ext if sched.buffers[v].region == "inline"}
        extra_types = [LL[g[v].type.dtype] if v in inline else PTR for v in ext]
        mm = g[kernel.nodes[0]]
        key = self._gemm_key(sched, kernel, tail, dtype, ta, tb, ext)
        if key not in self._gemms:
            # no tail, no epilogue: the GEMM then skips its pass over C (a plain product)
            epi = epilogue_for(g, mm, tail, ext, inline) if tail else None
            fn = emit_gemm(
                module,
                f"{fname}.gemm",
                dtype=dtype,
                trans_a=ta,
                trans_b=tb,
                epilogue=epi,
                vector_width=self.vector_width,
                registers=self.vector_registers,
                blocking=self._blocking(mm, dtype),
                extra_types=extra_types,
                pool=self.pool(module),
                fixed=self._fixed.get(key),
                # an update in the epilogue (it stores values besides C): nothing else reads C
                c_unread=not self.keep_grads and any(v in {t.name for t in tail} for v in ext),
            )
            fn.linkage = "internal"
            self._gemms[key] = fn
        return self._gemms[key], ext


def _matmul_dims(sched: Schedule, mm) -> tuple[int | None, int | None, int | None]:
    """M, N, K of a matmul node's GEMM (None where it depends on the batch size: N, or N*T rows
    of an operand of rank > 2); of a batched_matmul's, its matrices' (K.gemm_dims)."""
    dims = K.gemm_dims(sched.graph, mm)
    return tuple(None if BATCH in d else math.prod(d) for d in dims)  # type: ignore[return-value]


def scratch_bytes(sched: Schedule) -> int:
    """The scratch a schedule's workspace holds for its kernels (Schedule.scratch_bytes): the
    work buffer of its largest GEMM on any target (codegen.gemm.scratch_bound) and ALIGN
    bytes to align it, 0 without matmul kernels. The compiler sets it on every schedule it makes; it depends on the
    schedule alone, so the same workspace size serves the JIT and every export target."""
    need = 0
    for kernel in sched.kernels:
        if kernel.kind in K.GEMM_KINDS:
            mm, _tail, dtype, ta, tb, _ext = K.matmul_parts(sched.graph, kernel)
            need = max(need, scratch_bound(dtype, ta, tb, *_matmul_dims(sched, mm)))
    return need + ALIGN if need else 0  # ALIGN: room to align a MIN_ALIGN-aligned workspace


def _instructions(module: ir.Module) -> int:
    """Instructions emitted so far into ``module`` (a measure of its compile time)."""
    return sum(len(bb.instructions) for f in module.functions for bb in f.blocks)


def kernel_signature(sched: Schedule, kernel: Kernel, values: list[str]) -> tuple:
    """Everything the generated code of a kernel depends on, with value names abstracted away:
    ops, attrs and types of its nodes, how they connect, which operands are inline constants
    (and their values), which values share a buffer (one pointer argument), which are stored."""
    g = sched.graph
    members = {n: i for i, n in enumerate(kernel.nodes)}
    ext: dict[str, int] = {}

    def canon(v: str) -> tuple:
        if v in members:
            return ("n", members[v])
        if v not in ext:
            ext[v] = len(ext)
        nd = g[v]
        buf = sched.buffers[v]
        if buf.region == "inline":
            operand_types = tuple(g[i].type for i in nd.inputs)
            return ("inline", nd.op, attrs_key(nd.attrs), nd.type, operand_types)
        return ("x", ext[v], nd.type)

    nodes = tuple(
        (
            g[n].op,
            attrs_key(g[n].attrs),
            g[n].type,
            tuple(canon(i) for i in g[n].inputs),
            n in kernel.stores,
        )
        for n in kernel.nodes
    )
    keys = [storage_key(sched.buffers[v]) for v in K.distinct_buffers(sched, values)]
    arg_pattern = [
        keys.index(storage_key(sched.buffers[v]))
        for v in values
        if sched.buffers[v].region not in ("inline", "fused")
    ]
    out = members.get(kernel.gemm_out) if kernel.gemm_out else None
    return (
        kernel.kind,
        nodes,
        tuple(arg_pattern),
        kernel.copy_to is not None,
        kernel.elements,
        out,
    )
