"""One LLVM IR building block shared by the hand-written register tiles (popcount.py, fma_tile.py).

``accumulate_loop(builder, n, inits, step, name)`` emits ``for k in range(n): accs = step(k, accs)``
with every accumulator in an SSA phi, so LLVM keeps them in vector registers for the whole loop
(the reason the tiles are written as IR at all: Numba's loop vectoriser spills them to memory).
The builder is left at the loop's exit block; the returned phis hold the final accumulators.
"""
from llvmlite import ir

_I64 = ir.IntType(64)


def accumulate_loop(builder, n, inits, step, name):
    """``n``: i64 trip count; ``inits``: initial values; ``step(k, accs) -> new accs`` builds the body."""
    entry = builder.block
    head = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    k = builder.phi(_I64)
    accs = [builder.phi(v.type) for v in inits]
    k.add_incoming(_I64(0), entry)
    for acc, v in zip(accs, inits):
        acc.add_incoming(v, entry)
    builder.cbranch(builder.icmp_signed("<", k, n), body, done)
    builder.position_at_end(body)
    updated = step(k, accs)
    k.add_incoming(builder.add(k, _I64(1)), builder.block)  # the body may have added blocks: use the last
    for acc, new in zip(accs, updated):
        acc.add_incoming(new, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return accs
