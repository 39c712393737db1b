"""The bugs issue 18 planted, one at a time, in a scratch copy of src/; runs the fast tests that
should catch each and prints the failing ones (a bug no test fails says so: 0 failing).

    python scripts/planted_bugs.py [NAME-FRAGMENT ...]
"""
import os, shutil, subprocess, sys, tempfile
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
BUGS = {
 "pgd restarts ignored": ("attacks/pgd.py", [("for r in range(self.restarts):", "for r in range(1):")],
                          ["tests/test_science_attacks.py", "tests/test_attacks.py"]),
 "sweep records fooled at 0.5 as at 0.2 (one grid step early)": ("evaluate/robustness.py",
     [("f[hit] = torch.minimum(f[hit], torch.tensor(e, dtype=f.dtype))",
       "f[hit] = torch.minimum(f[hit], torch.tensor(grid[max(j - 1, 0)], dtype=f.dtype))"),
      ("robust[hit, j] = False", "robust[hit, max(j - 1, 0):] = False")],
     ["tests/test_science_attacks.py", "tests/test_robustness.py"]),
 "SCAAT KL direction reversed": ("train/methods/scaat.py", [("kl = kl_term(clean, adv)", "kl = kl_term(adv, clean)")],
     ["tests/test_science_methods.py", "tests/test_methods.py"]),
 "SCAAT lambda ignored": ("train/methods/scaat.py", [("ce + cfg.lam * kl", "ce + kl")],
     ["tests/test_science_methods.py", "tests/test_methods.py"]),
 "report threshold a quarter, population sd (t interval)": ("stats.py",
     [("se = float(d.std(ddof=1)) / math.sqrt(n)", "se = float(d.std(ddof=0)) / math.sqrt(n)"),
      ("return TInterval(m, m - tq * se, m + tq * se, p, n)", "return TInterval(m, m - tq * se / 4, m + tq * se / 4, p, n)")],
     ["tests/test_stats.py", "tests/test_report_text.py"]),
 "report's bootstrap interval narrowed (alpha x4)": ("stats.py", [("alpha = 1 - conf", "alpha = 4 * (1 - conf)")],
     ["tests/test_stats.py", "tests/test_report_text.py"]),
 "table sd as population sd": ("reporting/summary.py", [("/ (len(vals) - 1))", "/ len(vals))")],
     ["tests/test_stats.py", "tests/test_report_text.py"]),
 "SmoothGrad averages |grad|": ("explain/smoothgrad.py", [("abs=abs_each)", "abs=True)")],
     ["tests/test_science_saliency.py", "tests/test_explain.py"]),
 "CIFAR unpickler trusts numpy/torch/sgtlab globals": ("data/cifar.py",
     [("        try:\n            return _ALLOWED[(module, name)]",
       "        if module.split('.')[0] in ('numpy', 'torch', 'sgtlab'):\n            return super().find_class(module, name)\n        try:\n            return _ALLOWED[(module, name)]")],
     ["tests/test_unpickler.py", "tests/test_data.py", "tests/test_data_formats.py"]),
 "CIFAR unpickler accepts persistent ids": ("data/cifar.py",
     [('raise pickle.UnpicklingError("refused persistent id")', "return pid")],
     ["tests/test_unpickler.py", "tests/test_data.py", "tests/test_data_formats.py"]),
 "shared KL helper direction flipped": ("train/methods/_shared.py",
     [("F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1)",
       "F.kl_div(F.log_softmax(p_logits, dim=1), F.log_softmax(q_logits, dim=1)")],
     ["tests/test_science_methods.py", "tests/test_methods.py"]),
}
only = sys.argv[1:]
for name, (path, subs, tests) in BUGS.items():
    if only and not any(o in name for o in only):
        continue
    d = Path(tempfile.mkdtemp(prefix="sgtlab-plant-")); shutil.rmtree(d, ignore_errors=True); shutil.copytree(ROOT / "src", d / "src")
    f = d / "src/sgtlab" / path; text = f.read_text()
    for old, new in subs:
        assert text.count(old) == 1, (name, old); text = text.replace(old, new)
    f.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(d / "src"), SGTLAB_DATA=os.environ.get("SGTLAB_DATA", str(ROOT.parent / "shared" / "data")))
    r = subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-m", "not slow", "-p", "no:randomly",
                        "-p", "no:cacheprovider", "-rf", "--no-header"], cwd=ROOT, env=env, capture_output=True, text=True)
    failed = [l.split(" ")[1] for l in r.stdout.splitlines() if l.startswith("FAILED ")]
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
    print(f"## {name}: {len(failed)} failing ({last})", flush=True)
    for t in failed: print("   ", t, flush=True)
    shutil.rmtree(d, ignore_errors=True)
