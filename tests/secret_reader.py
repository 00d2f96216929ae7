"""A boot script that reads an SSM SecureString the way an instance does on AWS: its instance
profile's credentials from IMDSv2, then SSM's GetParameter signed with them (SigV4), with
Python's standard library only (a sandbox machine has no AWS CLI). It prints what IMDS answered
and the secret's length, never its value; `console` waits for cloud-init's output.
"""

from __future__ import annotations

import time

from sandbox.machines import instances as machines

# Python's standard library only, as a boot script on a bare instance might: IMDSv2 for the
# role's credentials, then SSM's GetParameter signed with them (SigV4).
READER = r'''
import datetime, hashlib, hmac, json, sys, urllib.error, urllib.request

IMDS = "http://169.254.169.254"


def imds(path, token=None):
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    return urllib.request.urlopen(urllib.request.Request(IMDS + path, headers=headers),
                                  timeout=2).read().decode()


token = urllib.request.urlopen(urllib.request.Request(
    IMDS + "/latest/api/token", method="PUT",
    headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}), timeout=2).read().decode()
try:
    imds("/latest/meta-data/instance-id")
    print("imds: read without a token")
except urllib.error.HTTPError as error:
    print("imds: without a token", error.code)
print("imds: instance", imds("/latest/meta-data/instance-id", token))
role = imds("/latest/meta-data/iam/security-credentials/", token).strip()
keys = json.loads(imds("/latest/meta-data/iam/security-credentials/" + role, token))
region = imds("/latest/meta-data/placement/region", token)
print("imds: role", role, keys["Code"], keys["AccessKeyId"][:4])
endpoint, name = sys.argv[1], sys.argv[2]
body = json.dumps({"Name": name, "WithDecryption": True}).encode()
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
headers = {"content-type": "application/x-amz-json-1.1", "host": endpoint.split("//")[1],
           "x-amz-date": stamp, "x-amz-security-token": keys["Token"],
           "x-amz-target": "AmazonSSM.GetParameter"}
signed = ";".join(sorted(headers))
canonical = "\n".join(["POST", "/", "", *(k + ":" + headers[k] for k in sorted(headers)), "",
                       signed, hashlib.sha256(body).hexdigest()])
scope = stamp[:8] + "/" + region + "/ssm/aws4_request"
text = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                  hashlib.sha256(canonical.encode()).hexdigest()])
key = ("AWS4" + keys["SecretAccessKey"]).encode()
for part in (stamp[:8], region, "ssm", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
headers["authorization"] = ("AWS4-HMAC-SHA256 Credential=" + keys["AccessKeyId"] + "/" + scope
                            + ", SignedHeaders=" + signed + ", Signature="
                            + hmac.new(key, text.encode(), hashlib.sha256).hexdigest())
request = urllib.request.Request(endpoint + "/", data=body, headers=headers, method="POST")
value = json.loads(urllib.request.urlopen(request, timeout=10).read())["Parameter"]["Value"]
print("secret: read,", len(value), "characters")
'''


def user_data(endpoint: str, parameter: str) -> str:
    return ("#!/bin/bash\nset -euo pipefail\n"
            "cat > /usr/local/bin/read-secret <<'KILN_READER'\n" + READER + "KILN_READER\n"
            f"python3 /usr/local/bin/read-secret {endpoint} {parameter}\n"
            "echo boot script done\n")




def console(box, instance_id: str) -> str:
    """The instance's cloud-init output once its boot script has ended."""
    log = machines.upper(box.state_dir, instance_id) / "var/log/cloud-init-output.log"
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        if "Cloud-init finished" in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"the boot script did not end: {text[-500:]}")
