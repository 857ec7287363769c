#!/usr/bin/env python3
"""Atomic instructions (lock-prefixed, or xchg with memory) executed per
request, from two callgrind profiles of bench/instructions.sh:

    INSTR_KEEP=/tmp/p INSTR_CALLGRIND_ARGS=--dump-instr=yes bench/instructions.sh
    bench/atomics.py /tmp/p/authgate-1000.cg /tmp/p/authgate-5000.cg 4000

Per request = (second - first) / N, per object and per function (after
inlining). Each such instruction costs tens of cycles on its own and orders
the memory accesses around it, which an instruction count does not show.
The instruction addresses come from `objdump -d`; each object's load offset
is found by matching the entry addresses callgrind saw to the symbol table."""
import collections, re, subprocess, sys

def parse(path):
    """{(object, function): {address: Ir}} from a callgrind file."""
    names = {"ob": {}, "fn": {}, "fl": {}, "fi": {}, "fe": {}, "cob": {}, "cfn": {}, "cfi": {}, "cfl": {}}
    ob = fn = None
    costs = collections.defaultdict(lambda: collections.defaultdict(int))
    last = 0
    skip_next = False
    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not m:
            return rest
        table = names["ob" if kind in ("ob", "cob") else "fn" if kind in ("fn", "cfn") else "fl"]
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "?")
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c in "0123456789+-*":
                parts = line.split()
                pos = parts[0]
                if pos.startswith("0x"):
                    last = int(pos, 16)
                elif pos[0] in "+-":
                    last += int(pos, 10) if pos[0] == "-" else int(pos[1:], 10)
                if skip_next:
                    skip_next = False
                    continue
                if len(parts) >= 3:
                    costs[(ob, fn)][last] += int(parts[2])
                continue
            key, _, rest = line.partition("=")
            if key == "ob":
                ob = name("ob", rest)
            elif key == "fn":
                fn = name("fn", rest)
            elif key in ("cob", "cfn", "cfi", "cfl", "fl", "fi", "fe"):
                name(key, rest)
            elif key == "calls":
                skip_next = True
    return costs

def locked(obj):
    """File addresses of lock-prefixed (or implicitly locked xchg) instructions, and C symbols."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True).stdout
    addrs = set()
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if not m:
            continue
        ins = m.group(2)
        if ins.startswith("lock") or (ins.startswith("xchg") and "(%" in ins):
            addrs.add(int(m.group(1), 16))
    syms = {}
    for flag in ([], ["-D"]):
        for line in subprocess.run(["nm"] + flag + [obj], capture_output=True, text=True).stdout.splitlines():
            p = line.split()
            # Dynamic symbols carry their version (`free@@GLIBC_2.2.5`).
            name = p[2].split("@")[0] if len(p) == 3 else ""
            if len(p) == 3 and p[1] in "tTwWiI" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                syms[name] = int(p[0], 16)
    return addrs, syms

a, b, n = parse(sys.argv[1]), parse(sys.argv[2]), int(sys.argv[3])
objects = {ob for ob, _ in list(a) + list(b) if ob}
per_fn = collections.Counter()
per_ob = collections.Counter()
for obj in sorted(objects):
    try:
        addrs, syms = locked(obj)
    except Exception:
        continue
    if not addrs:
        continue
    # the load offset: runtime entry address of C-named functions less their file address
    deltas = collections.Counter()
    for (ob, fn), m in b.items():
        plain = fn.split("@")[0] if fn else fn
        if ob == obj and plain in syms:
            deltas[min(m) - syms[plain]] += 1
    if not deltas:
        continue
    delta = deltas.most_common(1)[0][0]
    for (ob, fn) in set(a) | set(b):
        if ob != obj:
            continue
        ma, mb = a.get((ob, fn), {}), b.get((ob, fn), {})
        for addr in set(ma) | set(mb):
            if addr - delta in addrs:
                d = (mb.get(addr, 0) - ma.get(addr, 0)) / n
                per_fn[(obj, fn)] += d
                per_ob[obj] += d
print("atomic instructions per request: %.1f" % sum(per_ob.values()))
for obj, v in per_ob.most_common():
    print("  %7.1f  %s" % (v, obj))
print()
for (obj, fn), v in per_fn.most_common(60):
    if v >= 0.05:
        print("  %7.2f  %s" % (v, fn[:160]))
