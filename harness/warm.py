"""Imported once by the local launcher's fork server (its preload list): every method module is imported and
the git state read there, at the sweep's start. Jobs forked later run exactly that code and record that
state, so a commit made while a long campaign runs cannot pair a job's old code with a newer sha (a method
module imported lazily in the job would be read from disk at the job's own time instead). It lives outside
hydra_plugins/ because Hydra imports every module there when it scans for plugins, at every compose."""
from __future__ import annotations

import methods
import methods.peft_native  # the peft-native methods' hooks
from harness.provenance import git_info, package_versions

methods._discover()
GIT = git_info()
PACKAGES = package_versions()
