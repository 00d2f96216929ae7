"""Images that hold a small web app, made the way a bake makes one (a machine, a session into it,
CreateImage), without Chef: quick enough for server group and canary tests.

The app (`web.service`, enabled, so it starts on every instance launched from the image) answers
`/health` with 200 and every other path with the status and text its image was made with, plus
the contents of /etc/web/greeting when user data wrote one; it logs each request but the health
checks to /var/log/web-requests.log.
"""

from __future__ import annotations

import shlex

from tests.test_sandbox_instances import BAKE_KEY_TAGS, base_image, connect

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
                                 KeyName=key)["Instances"][0]
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


def quoted(text: str) -> str:
    return shlex.quote(text)
