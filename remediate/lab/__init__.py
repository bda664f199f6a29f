"""The local lab of real mail hosts (real OpenSSH sshd, real Postfix) in namespaces on this machine."""

from remediate.lab.core import DEFAULT_STATE, Lab, LabHost, missing_requirements
from remediate.lab.scenarios import SCENARIOS

__all__ = ["DEFAULT_STATE", "SCENARIOS", "Lab", "LabHost", "missing_requirements"]
