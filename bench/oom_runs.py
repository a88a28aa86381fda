"""The OOM benchmark's runs (bench/oom.sh): one agent, a memory hog per
run in a fresh container, each scenario RUNS times, interleaved so that
the machine's drift hits them alike. Figures come from the journal
(CLOCK_REALTIME, ns) and the hog's last heartbeat (same clock)."""
import json, os, shutil, statistics, subprocess, sys, time

palisade, rootfs, hog, work, runs = sys.argv[1:6]
runs = int(runs)
root = os.path.join(work, "state")
x = os.path.join(work, "x")
log = open(os.path.join(work, "agent.log"), "w+")

SCENARIOS = {
    # name: (policy, what ends the run)
    "kernel OOM kill (no [oom])": ('[resources]\nmemory = "64M"\n', "exited"),
    "kill at oom": ('[resources]\nmemory = "64M"\n[oom]\naction = "kill"\n', "exited"),
    "kill at memory_high": ('[resources]\nmemory = "512M"\nmemory_high = "64M"\n[oom]\naction = "kill"\nat = "memory_high"\n', "exited"),
    "freeze at memory_high": ('[resources]\nmemory = "512M"\nmemory_high = "64M"\n[oom]\naction = "freeze"\nat = "memory_high"\n', "oom_action"),
    "notify at oom": ('[resources]\nmemory = "64M"\n[oom]\naction = "notify"\n', "exited"),
}

def pal(*args):
    return subprocess.run([palisade, "--root", root, *args], capture_output=True, text=True)

def records(name):
    try:
        lines = open(os.path.join(root, ".journal", "events")).read().splitlines()
    except FileNotFoundError:
        return []
    return [r for r in map(json.loads, lines) if r["container"] == name]

def wait(pred, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise SystemExit(f"oom bench: timed out waiting for {what}\n" + open(log.name).read()[-3000:])

agent = subprocess.Popen([palisade, "--root", root, "agent", "--metrics-addr", "127.0.0.1:0"],
                         stdout=log, stderr=log)
results = {s: {"latency": [], "to_action": [], "to_exit": []} for s in SCENARIOS}
try:
    wait(lambda: "metrics" in open(log.name).read(), "the agent")
    n = 0
    for i in range(runs):
        for scenario, (policy, end) in SCENARIOS.items():
            n += 1
            name = f"oombench-{os.getpid()}-{n}"
            shutil.rmtree(x, ignore_errors=True)
            os.makedirs(x)
            shutil.copy(hog, os.path.join(x, "oom_hog"))
            with open(os.path.join(work, "policy.toml"), "w") as f:
                f.write(policy)
            r = pal("run", "-d", "--name", name, "--rootfs", rootfs, "--mount", f"{x}:/x",
                    "--policy", os.path.join(work, "policy.toml"), "--", "/x/oom_hog", "hog", "/x/beat")
            if r.returncode != 0:
                raise SystemExit(f"oom bench: run failed: {r.stderr}")
            if "[oom]" in policy:
                wait(lambda: any("watching for OOM" in l and name in l
                                 for l in open(log.name).read().splitlines()), "the watch")
            open(os.path.join(x, "go"), "w").close()
            rec = wait(lambda: next((r for r in records(name) if r["kind"] == end), None), end)
            beat = int(open(os.path.join(x, "beat")).read().strip())
            action = next((r for r in records(name) if r["kind"] == "oom_action"), None)
            if action:
                results[scenario]["latency"].append(action["latency_us"])
                results[scenario]["to_action"].append((action["time_ns"] - beat) / 1e3)
            if end == "exited":
                results[scenario]["to_exit"].append((rec["time_ns"] - beat) / 1e3)
            pal("rm", "-f", name)
finally:
    agent.kill()
    agent.wait()

def fmt(xs):
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"{statistics.median(xs):8.0f} ({xs[int(len(xs) * 0.9) - 1 if len(xs) > 1 else 0]:.0f})"

print(f"{'us, median (p90), ' + str(runs) + ' runs each':<30} {'wake->action done':>20} {'last beat->action':>20} {'last beat->exit seen':>22}")
for s, r in results.items():
    print(f"{s:<30} {fmt(r['latency']):>20} {fmt(r['to_action']):>20} {fmt(r['to_exit']):>22}")
