"""The local lab of real mail hosts (real OpenSSH sshd, real Postfix) in namespaces on this machine."""

from remediate.lab.core import DEFAULT_STATE, Lab, LabHost, missing_requirements
from remediate.lab.fault_scenarios import FAULT_SCENARIOS
from remediate.lab.scenarios import SCENARIOS

SCENARIOS.update(FAULT_SCENARIOS)   # the fault tests' scenarios (lab up --scenario all leaves them out)

__all__ = ["DEFAULT_STATE", "SCENARIOS", "Lab", "LabHost", "missing_requirements"]
