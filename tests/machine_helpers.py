"""Images that hold a small web app, made the way a bake makes one (a machine, a session into it,
CreateImage), without Chef: quick enough for server group and canary tests.

The app (`web.service`, enabled, so it starts on every instance launched from the image) answers
`/health` with 200 and every other path with the status and text its image was made with, plus
the contents of /etc/web/greeting when user data wrote one; it logs each request but the health
checks to /var/log/web-requests.log. `promoted_web_image` tags one as a promoted image of
hello-web in the deploy account; `Traffic` is a bounded request loop through the cluster's HTTPS
listener.
"""

from __future__ import annotations

import http.client
import threading
import time

from cloud import tags as kiln_tags
from sandbox import listener_cert
from tests.deploy_helpers import admin_of
from tests.image_helpers import available
from tests.network_helpers import https_get
from tests.test_sandbox_instances import BAKE_KEY_TAGS, base_image, connect, ssh_group

MAX_REQUESTS = 5000  # a traffic loop's bound, whatever happens

SERVER = r'''
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATUS, TEXT = {status}, {text!r}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code, body = (200, "ok\n") if self.path == "/health" else (STATUS, TEXT + "\n")
        if self.path != "/health":
            with open("/var/log/web-requests.log", "a") as log:
                log.write(self.path + "\n")
            if os.path.exists("/etc/web/greeting"):
                body += open("/etc/web/greeting").read()
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''
UNIT = """[Unit]
Description=a small web app
After=network.target

[Service]
ExecStart=/usr/bin/python3 /opt/web/server.py
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def web_image(box, ec2, name: str, status: int = 200, text: str = "hello") -> str:
    """An image (CreateImage of a machine) holding the web app, enabled; its id."""
    key = f"{name}-key"
    pem = ec2.create_key_pair(KeyName=key, TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName=key, SecurityGroupIds=[ssh_group(ec2)])["Instances"][0]
    server = SERVER.format(status=int(status), text=text)
    with connect(box, instance, pem) as ssh:
        for path, content in (("/opt/web/server.py", server),
                              ("/etc/systemd/system/web.service", UNIT)):
            ssh.run(f"sudo -n install -D -m 0644 /dev/stdin {path} <<'EOF'\n{content}EOF",
                    hide=True)
        ssh.run("sudo -n systemctl enable web.service", hide=True)
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name=name)["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    ec2.delete_key_pair(KeyName=key)
    return image


def promoted_web_image(box, daws, version: str, status: int, release: str | None = None,
                       app: str = "hello-web") -> str:
    """A machine image of the web app in the deploy account, tagged as a promoted image of
    `app` (of `release` too, when given)."""
    ec2 = admin_of(daws).client("ec2", daws.region)
    image = web_image(box, ec2, f"web-{version}", status=status, text=f"version {version}")
    available(ec2, image)
    extra = {kiln_tags.RELEASE: release} if release else {}
    tags = kiln_tags.kiln_tags(app, "image", run_id="20250101T000000-abcdef",
                               version=version, **extra)
    ec2.create_tags(Resources=[image], Tags=kiln_tags.to_list(tags))
    return image


class Traffic:
    """`clients` threads GETting / through the load balancer's HTTPS listener, each request after
    the last, each recorded as (started, status, body); at most MAX_REQUESTS in all."""

    def __init__(self, address: str, cafile, clients: int = 1):
        self.address, self.cafile = address, cafile
        self.name = f"hello-web.{listener_cert.DOMAIN}"
        self.seen: list[tuple[float, int, str]] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def run(self) -> None:
        while not self.halt.is_set() and len(self.seen) < MAX_REQUESTS:
            started = time.monotonic()
            try:
                status, body = https_get(self.address, 443, self.name, self.cafile, timeout=5)
            except (OSError, http.client.HTTPException) as error:
                status, body = 0, str(error)
            self.seen.append((started, status, body))  # list.append: one at a time

    def stop(self) -> list[tuple[float, int, str]]:
        self.halt.set()
        for thread in self.threads:
            thread.join(30)
        return sorted(self.seen)
