"""The little harness both interop scripts share: named checks that report
and go on, and the summary line `.ci/run` reads."""

import traceback

RESULTS = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
        RESULTS["passed"] += 1
        print(f"ok   {name}", flush=True)
    except Exception:  # noqa: BLE001 - report and go on
        RESULTS["failed"] += 1
        print(f"FAIL {name}", flush=True)
        traceback.print_exc()


def summary():
    """Prints "N passed, M failed" and returns the exit status."""
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0
