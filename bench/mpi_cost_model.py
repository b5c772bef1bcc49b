#!/usr/bin/env python3
"""The cost model of data-parallel training over MPI (docs/distributed.md): time per step, throughput and parallel
efficiency of liblenet's data-parallel training loop for N processes, from the sizes of the network and of the
batch and three numbers per network: latency alpha, per-message overhead o and bandwidth beta.

It follows lib/mpi/comm.c: the same choice between the chain and the slices (by the library's own cost in bytes), the
same number of chain blocks; then it prices what the library does with the network's real alpha, o and beta.

    bench/mpi_cost_model.py                 # the tables of docs/distributed.md
    bench/mpi_cost_model.py --check         # the model for 1-4 processes on this machine's shared memory
"""
import argparse
import math

CHUNK = 16
LATENCY_BYTES = 32768.0  # lib/mpi/comm.c's LATENCY_BYTES
MAX_BLOCKS = 256
MEMORY_BW = 10e9         # bytes/s one core streams through the optimizer, the checks and the reduction

NETWORKS = {
    # alpha (s), o (s per message among many in flight), beta (bytes/s)
    "10 Gb/s Ethernet (TCP)": (25e-6, 5e-6, 1.1e9),
    "100 Gb/s InfiniBand/RoCE": (2e-6, 0.3e-6, 11e9),
    "shared memory (this machine)": (1e-6, 0.5e-6, 2.5e9),
}

NETS = {
    # arena bytes (lenet_model arena, padded), seconds per sample per core (forward + backward), classes
    "d2l LeNet (61,706 parameters)": (247040, 35e-6, 10),
    "10x wider LeNet (6,060,170 parameters)": (24240768, 35e-6 * 65, 10),
}


def log2_ceil(n):
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def chain_blocks(count, holders, size):
    hops = holders + size - 2
    blocks = int(math.sqrt(hops * count * 4 / LATENCY_BYTES) + 0.5)
    blocks = min(blocks, MAX_BLOCKS, count // 16)
    return max(blocks, 1)


def library_choice(arena, chunks, size):
    """What lib/mpi/comm.c picks: ('chain', blocks) or ('slices', 0)."""
    count = arena // 4
    holders = min(chunks, size)
    blocks = chain_blocks(count, holders, size)
    hops = holders + size - 2
    chain = (1 + hops / blocks) * arena + (hops + blocks) * LATENCY_BYTES
    most = -(-chunks // size)
    share = arena / size
    slices = (chunks - most) * share + (size - 1) * share + (2.0 * (size - 1) / 8 + log2_ceil(size)) * LATENCY_BYTES
    return ("chain", blocks) if chain < slices else ("slices", 0)


def step_time(net, network, size, batch):
    """Seconds per step on each process, split into its parts."""
    arena, per_sample, _ = NETS[net]
    alpha, overhead, beta = NETWORKS[network]
    chunks = -(-batch // CHUNK)
    most = -(-chunks // size)
    compute = min(batch, most * CHUNK) * per_sample
    # Every process: the optimizer's step, the parameter snapshot and two finiteness scans over the arena, plus the
    # rows it sums (its own chunks' rows in the chain, every row of its slice with slices).
    local = (4 + most) * arena / MEMORY_BW
    parts = {"compute": compute, "local": local, "agree": 0.0, "gradients": 0.0}
    way = ("in-process", 0)
    if size > 1:
        # The agreement that ends a step gathers each sample's loss term and hit (16 bytes) with the statuses.
        parts["agree"] = log2_ceil(size) * alpha + 16 * batch * (size - 1) / size / beta
        way = library_choice(arena, chunks, size)
        if way[0] == "chain":
            holders = min(chunks, size)
            hops = holders + size - 2
            parts["gradients"] = (hops + way[1]) * (alpha + arena / way[1] / beta)
        else:
            share = arena / size
            parts["gradients"] = (alpha + 2 * (size - 1) * overhead + (chunks - most) * share / beta
                                  + log2_ceil(size) * alpha + (size - 1) * share / beta)
    return parts, way


def table(net, network, per_process, sizes):
    rows = []
    one, _ = step_time(net, network, 1, per_process)
    one_total = sum(one.values())
    for size in sizes:
        batch = per_process * size
        parts, way = step_time(net, network, size, batch)
        total = sum(parts.values())
        rows.append((size, batch, way, parts, total, batch / total, one_total / total))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="1-4 processes over shared memory, batch 128")
    parser.add_argument("--per-process", type=int, default=128, help="samples per process and step (default 128)")
    args = parser.parse_args()
    if args.check:
        network = "shared memory (this machine)"
        for net in NETS:
            print(f"{net}, {network}, global batch 128:")
            print("| processes | gradients | gradient call ms (exchange + rows summed) | step ms | examples/s |")
            print("| ---: | --- | ---: | ---: | ---: |")
            arena = NETS[net][0]
            for size in (1, 2, 3, 4):
                parts, way = step_time(net, network, size, 128)
                total = sum(parts.values())
                name = way[0] + (f" ({way[1]} blocks)" if way[0] == "chain" else "")
                call = parts["gradients"] + -(-8 // size) * arena / MEMORY_BW
                print(f"| {size} | {name} | {call * 1e3:.3f} | {total * 1e3:.2f} | {128 / total:.0f} |")
            print()
        return
    for net in NETS:
        for network in ("10 Gb/s Ethernet (TCP)", "100 Gb/s InfiniBand/RoCE"):
            print(f"{net}, {network}, {args.per_process} samples per process and step:")
            print("| processes | global batch | gradients | compute ms | exchange ms | step ms | examples/s | "
                  "efficiency |")
            print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
            for size, batch, way, parts, total, rate, efficiency in table(net, network, args.per_process,
                                                                          (1, 8, 64, 512)):
                exchange = parts["agree"] + parts["gradients"]
                name = way[0] + (f" ({way[1]} blocks)" if way[0] == "chain" else "")
                print(f"| {size} | {batch} | {name} | {parts['compute'] * 1e3:.2f} | {exchange * 1e3:.2f} | "
                      f"{total * 1e3:.2f} | {rate:,.0f} | {efficiency:.0%} |")
            print()


if __name__ == "__main__":
    main()
