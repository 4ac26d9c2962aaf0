"""Exit statuses of the kfp-ct command, one meaning each, so a scheduler can tell them apart.

Shared by the CLI and the local retraining launcher, which runs ``kfp-ct run-local`` as a
child process and reads its status.
"""

OK = 0  # done: a local training run pushed, a waited run SUCCEEDED, a command completed
FAILED = 1  # a run (or a task of a local run) failed
USAGE = 2  # bad input or configuration, or the server said no; nothing ran
TIMEOUT = 3  # a wait timed out (the run goes on)
NOT_PUSHED = 4  # a local training run succeeded but pushed nothing: not blessed, or refused
INTERRUPTED = 130  # stopped by Ctrl-C (128 + SIGINT, as shells report it)

# A local training run ended as it should (its outcome is in the summary).
RUN_COMPLETED = (OK, NOT_PUSHED)
