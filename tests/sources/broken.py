#!/usr/bin/python3
"""A misbehaving external source for the tests: inputs/sources/rdkit_features.py
with one fault, chosen by the first argument; K (second argument, default 1) is
how many batches each process answers properly before the fault.

  crash K     answers one line of batch K+1, then exits with status 3
  partial K   answers one line of batch K+1 and half of the next, then exits with
              status 3 (a crash in the middle of writing an answer)
  hang K      sleeps (in a child process of the shell it runs) on batch K+1
  garbage K   from batch K+1 on, answers lines that are not JSON
  badrows K   from batch K+1 on, answers rows one column short
  short K     answers batch K+1 with one line too few, then goes on
  desync K    answers batch K+1 with the indices shifted by one
  deaf        sends its handshake, then never reads stdin
  startup     writes to stderr and exits with status 2 before its handshake
  version     sends a handshake of version 2
  fewcols     declares no element=C column
  extra       adds the extra atom column "mass" and the extra bond column "order"
  absurd K [V] from batch K+1 on, the first molecule's first atom row holds V (1e20)
  drift       deterministic but for the first atom row of each molecule, whose first
              value is the process's batch count (so a molecule asked twice differs)
  slow MS     answers properly, sleeping MS milliseconds per request (a per-request
              latency, e.g. a job queue or a remote service)
  setsid      starts a helper in a session of its own (`sleep 3602`, outside the
              source's process group), then answers properly
  chatty N    writes N MiB to stderr before its handshake, then answers properly
  huge N      answers the first molecule of its first batch with a valid graph of N
              atoms (copies of its first atom row, no bonds)
  strict K    written to README: numbers its answers with its own batch count (from 0
              per process) and exits without answering batch K+1 of its first start
              (a marker file strict.crashed in its working directory)

Each process also writes "broken.py MODE: batch N" to stderr for every batch.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "inputs", "sources"))
import rdkit_features as rf  # noqa: E402

mode = sys.argv[1]
k = int(sys.argv[2]) if len(sys.argv) > 2 else 1
say = lambda s: print(f"broken.py {mode}: {s}", file=sys.stderr, flush=True)  # noqa: E731
out = lambda o: sys.stdout.write(o if isinstance(o, str) else json.dumps(o) + "\n")  # noqa: E731

if mode == "chatty":
    line = "x" * 1023 + "\n"
    for _ in range(1024 * k):
        sys.stderr.write(line)
    sys.stderr.flush()
if mode == "startup":
    say("cannot load my model")
    sys.exit(2)
atoms, bonds = list(rf.ATOM_COLUMNS), list(rf.BOND_COLUMNS)
if mode == "fewcols":
    atoms.remove("element=C")
if mode == "extra":
    atoms.append("mass")
    bonds.append("order")
hello = {"protocol": "zo-hpc-source", "version": 2 if mode == "version" else 1,
         "name": f"broken-{mode}", "atom_columns": atoms, "bond_columns": bonds}
out(hello)
sys.stdout.flush()
if mode == "deaf":
    subprocess.run(["sleep", "3600"])
if mode == "setsid":
    subprocess.Popen(["sleep", "3602"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    say("started a helper in its own session")

for n, line in enumerate(sys.stdin):
    req = json.loads(line)
    b, smiles = req["batch"], req["smiles"]
    say(f"batch {b}")
    faulty = n >= k
    if mode == "strict":
        b = n  # its own count, as README promises the requests' to be
        if n == k and not os.path.exists("strict.crashed"):
            open("strict.crashed", "w").close()
            say("crashing once")
            sys.exit(3)
    answers = [rf.answer(b, i, s) for i, s in enumerate(smiles)]
    if mode == "extra":
        for a, s in zip(answers, smiles):
            mol = rf.Chem.MolFromSmiles(s)
            for row, atom in zip(a.get("atoms", []), mol.GetAtoms() if mol else []):
                row.append(atom.GetMass() / 100)
            for bond in a.get("bonds", []):
                bond[2].append(1)
    if faulty and mode == "crash":
        out(answers[0])
        sys.stdout.flush()
        say("crashing")
        sys.exit(3)
    if faulty and mode == "partial" and len(answers) > 1:
        out(answers[0])
        text = json.dumps(answers[1])
        sys.stdout.write(text[: len(text) // 2])
        sys.stdout.flush()
        say("crashing mid-line")
        sys.exit(3)
    if faulty and mode == "hang":
        say("hanging")
        sys.stdout.flush()
        subprocess.run(["sh", "-c", "sleep 3601"])
    if faulty and mode == "garbage":
        answers = ["this is not json\n" for _ in smiles]
    if faulty and mode == "badrows":
        for a in answers:
            for row in a.get("atoms", []):
                row.pop()
    if faulty and mode == "absurd" and "atoms" in answers[0]:
        answers[0]["atoms"][0][0] = float(sys.argv[3]) if len(sys.argv) > 3 else 1e20
    if mode == "slow":
        time.sleep(k / 1000)
    if mode == "drift":
        for a in answers:
            if "atoms" in a:
                a["atoms"][0][0] = n
    if mode == "huge" and n == 0 and "atoms" in answers[0]:
        answers[0]["atoms"] = answers[0]["atoms"][:1] * k
        answers[0]["bonds"] = []
    if n == k and mode == "short":
        answers = answers[:-1]
    if n == k and mode == "desync":
        for a in answers:
            a["index"] += 1
    for a in answers:
        out(a)
    sys.stdout.flush()
