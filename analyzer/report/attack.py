"""MITRE ATT&CK tags, as Falco's rules and ours write them, made readable.

Falco tags a rule with a tactic (``mitre_credential_access``) and often a
technique id (``T1555``, ``T1003.008``). The table holds the techniques those
rules files use plus the ones our default rules use; an id not in the table
is still shown, with its link target, just without a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TECHNIQUES: dict[str, str] = {
    "T1003": "OS Credential Dumping",
    "T1003.008": "OS Credential Dumping: /etc/passwd and /etc/shadow",
    "T1005": "Data from Local System",
    "T1014": "Rootkit",
    "T1020": "Automated Exfiltration",
    "T1021.004": "Remote Services: SSH",
    "T1027": "Obfuscated Files or Information",
    "T1036": "Masquerading",
    "T1036.005": "Masquerading: Match Legitimate Name or Location",
    "T1046": "Network Service Discovery",
    "T1053": "Scheduled Task/Job",
    "T1053.003": "Scheduled Task/Job: Cron",
    "T1055": "Process Injection",
    "T1055.008": "Process Injection: Ptrace System Calls",
    "T1059": "Command and Scripting Interpreter",
    "T1059.004": "Command and Scripting Interpreter: Unix Shell",
    "T1059.006": "Command and Scripting Interpreter: Python",
    "T1068": "Exploitation for Privilege Escalation",
    "T1070": "Indicator Removal",
    "T1070.002": "Indicator Removal: Clear Linux or Mac System Logs",
    "T1070.004": "Indicator Removal: File Deletion",
    "T1071": "Application Layer Protocol",
    "T1072": "Software Deployment Tools",
    "T1082": "System Information Discovery",
    "T1083": "File and Directory Discovery",
    "T1087": "Account Discovery",
    "T1098": "Account Manipulation",
    "T1098.004": "Account Manipulation: SSH Authorized Keys",
    "T1105": "Ingress Tool Transfer",
    "T1132": "Data Encoding",
    "T1136": "Create Account",
    "T1190": "Exploit Public-Facing Application",
    "T1195.002": "Supply Chain Compromise: Compromise Software Supply Chain",
    "T1204": "User Execution",
    "T1205.001": "Traffic Signaling: Port Knocking",
    "T1222.002": "File and Directory Permissions Modification: Linux and Mac",
    "T1485": "Data Destruction",
    "T1496": "Resource Hijacking",
    "T1505": "Server Software Component",
    "T1505.003": "Server Software Component: Web Shell",
    "T1543": "Create or Modify System Process",
    "T1543.002": "Create or Modify System Process: Systemd Service",
    "T1546.004": "Event Triggered Execution: Unix Shell Configuration Modification",
    "T1547.006": "Boot or Logon Autostart Execution: Kernel Modules and Extensions",
    "T1548": "Abuse Elevation Control Mechanism",
    "T1548.001": "Abuse Elevation Control Mechanism: Setuid and Setgid",
    "T1548.003": "Abuse Elevation Control Mechanism: Sudo and Sudo Caching",
    "T1552": "Unsecured Credentials",
    "T1552.001": "Unsecured Credentials: Credentials In Files",
    "T1552.004": "Unsecured Credentials: Private Keys",
    "T1552.005": "Unsecured Credentials: Cloud Instance Metadata API",
    "T1555": "Credentials from Password Stores",
    "T1556": "Modify Authentication Process",
    "T1557.002": "Adversary-in-the-Middle: ARP Cache Poisoning",
    "T1562": "Impair Defenses",
    "T1562.001": "Impair Defenses: Disable or Modify Tools",
    "T1564.001": "Hide Artifacts: Hidden Files and Directories",
    "T1565": "Data Manipulation",
    "T1571": "Non-Standard Port",
    "T1610": "Deploy Container",
    "T1611": "Escape to Host",
    "T1620": "Reflective Code Loading",
    "T1622": "Debugger Evasion",
}

TACTICS: dict[str, str] = {
    "mitre_reconnaissance": "Reconnaissance",
    "mitre_resource_development": "Resource Development",
    "mitre_initial_access": "Initial Access",
    "mitre_execution": "Execution",
    "mitre_persistence": "Persistence",
    "mitre_privilege_escalation": "Privilege Escalation",
    "mitre_defense_evasion": "Defense Evasion",
    "mitre_credential_access": "Credential Access",
    "mitre_discovery": "Discovery",
    "mitre_lateral_movement": "Lateral Movement",
    "mitre_collection": "Collection",
    "mitre_command_and_control": "Command and Control",
    "mitre_exfiltration": "Exfiltration",
    "mitre_impact": "Impact",
    # Falco's own tags in the mitre_ namespace that are not ATT&CK tactics.
    "mitre_remote_service": "Remote Services",
    "mitre_remote_access_tools": "Remote Access Tools",
    "mitre_port_knocking": "Port Knocking",
}

_TECHNIQUE_ID = re.compile(r"^T\d{4}(?:\.\d{3})?$")


@dataclass(frozen=True)
class AttackTag:
    """One ATT&CK reference from a rule's tags."""

    tag: str  # as written in the rule
    kind: str  # "tactic" | "technique"
    name: str  # readable name, "" when the id is unknown to the table
    url: str  # attack.mitre.org page (shown as text; the report never loads it)


def attack_tag(tag: str) -> AttackTag | None:
    """The ATT&CK meaning of a rule tag, or None for a non-ATT&CK tag."""
    if tag in TACTICS:
        slug = tag.removeprefix("mitre_")
        return AttackTag(tag, "tactic", TACTICS[tag], f"https://attack.mitre.org/tactics/{slug}/")
    if tag.startswith("mitre_"):
        name = tag.removeprefix("mitre_").replace("_", " ").title()
        return AttackTag(tag, "tactic", name, "")
    if _TECHNIQUE_ID.match(tag):
        path = tag.replace(".", "/")
        return AttackTag(tag, "technique", TECHNIQUES.get(tag, ""), f"https://attack.mitre.org/techniques/{path}/")
    return None
