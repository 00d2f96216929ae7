"""The app environment's HTTPS listener (cloud/templates/env.yaml) and the sandbox's load balancer
serving it for real: TLS with the certificate's key as ACM holds it, HTTP answered with a 301 to
HTTPS; self-service rules answer only the configured source ranges."""

from __future__ import annotations

import http.client
import ssl
import subprocess

import boto3
import pytest
from botocore.exceptions import ClientError

from cloud.errors import ConfigError, KilnError
from cloud.stacks import stack_name
from cloud.target import connect
from orchestrator import selfservice
from orchestrator import stack as env_stack_module
from sandbox import listener_cert
from tests.deploy_helpers import TEMPLATE, admin_of
from tests.network_helpers import all_healthy, forward, get, https_get, until

NAME = f"hello-web.{listener_cert.DOMAIN}"


def redirect_of(host: str, port: int, path: str) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": NAME})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", *args], capture_output=True,
                          text=True, timeout=30, check=True).stdout


def test_env_listener_is_https_with_the_certificate_and_http_redirects(kaws, daws, outputs):
    elbv2 = daws.client("elbv2")
    https = elbv2.describe_listeners(ListenerArns=[outputs["ListenerArn"]])["Listeners"][0]
    assert (https["Protocol"], https["Port"]) == ("HTTPS", 443)
    assert https["Certificates"][0]["CertificateArn"] == kaws.settings.deploy.listener.certificate
    plain = elbv2.describe_listeners(ListenerArns=[outputs["HttpListenerArn"]])["Listeners"][0]
    assert (plain["Protocol"], plain["Port"]) == ("HTTP", 80)
    assert plain["DefaultActions"][0]["RedirectConfig"]["StatusCode"] == "HTTP_301"
    host = outputs["LoadBalancerDnsName"]
    ca = listener_cert.files(kaws.settings.sandbox.state_dir)["ca"]
    assert redirect_of(host, 80, "/a/b?c=1") == (301, f"https://{NAME}/a/b?c=1")
    assert https_get(host, 443, NAME, ca) == (503, "no server group is serving yet")
    assert curl("--cacert", str(ca), "--resolve", f"{NAME}:443:{host}", "-w", "%{http_code}",
                f"https://{NAME}/") == "503"
    assert curl("-w", "%{http_code} %{redirect_url}", "-H", f"Host: {NAME}",
                f"http://{host}/x") == f"301 https://{NAME}/x"
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(host, 443, NAME)  # the sandbox's CA is no public one
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(host, 443, "example.com", ca)  # nor is the certificate for any other name


def test_the_listener_kiln_routes_with_is_the_https_one(kaws, daws, outputs):
    from orchestrator import environment

    env = environment.load(kaws)
    assert env.listener_arn == outputs["ListenerArn"]
    listener = daws.client("elbv2").describe_listeners(ListenerArns=[env.listener_arn])
    assert listener["Listeners"][0]["Protocol"] == "HTTPS"


def test_sandbox_https_listener_terminates_tls_and_forwards(lb, sandbox_box):
    all_healthy(lb)
    elbv2 = boto3.client("elbv2")
    arn = listener_cert.import_into(boto3.client("acm"), sandbox_box.state_dir)
    elbv2.create_listener(LoadBalancerArn=lb["arn"], Protocol="HTTPS", Port=443,
                          Certificates=[{"CertificateArn": arn}],
                          DefaultActions=[forward(lb["groups"], green=1)])
    ca = listener_cert.files(sandbox_box.state_dir)["ca"]
    assert https_get(lb["dns"], 443, NAME, ca) == (200, "green\n")
    with pytest.raises(ConnectionError):  # TLS only: plain HTTP gets no answer
        get(lb["dns"], 443, timeout=3)
    assert get(lb["dns"], 80)[0] == 200  # the HTTP listener beside it is unchanged


def test_sandbox_redirect_keeps_path_query_and_names_the_port(lb):
    elbv2 = boto3.client("elbv2")
    elbv2.modify_listener(ListenerArn=lb["listener"], DefaultActions=[{
        "Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "8443",
                                               "StatusCode": "HTTP_301"}}])
    assert redirect_of(lb["dns"], 80, "/p?q=1") == (301, f"https://{NAME}:8443/p?q=1")
    elbv2.modify_listener(ListenerArn=lb["listener"], DefaultActions=[{
        "Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443",
                                               "StatusCode": "HTTP_302"}}])
    assert redirect_of(lb["dns"], 80, "/") == (302, f"https://{NAME}/")


def test_sandbox_source_ip_condition_matches_the_client_address(lb):
    all_healthy(lb)
    elbv2 = boto3.client("elbv2")
    rule = elbv2.create_rule(
        ListenerArn=lb["listener"], Priority=1, Actions=[forward(lb["groups"], green=1)],
        Conditions=[{"Field": "source-ip", "SourceIpConfig": {"Values": ["192.0.2.0/24"]}}],
    )["Rules"][0]["RuleArn"]
    assert "blue\n" in {get(lb["dns"], 80)[1] for _ in range(20)}  # not from there: default
    elbv2.modify_rule(RuleArn=rule, Conditions=[
        {"Field": "source-ip", "SourceIpConfig": {"Values": ["127.0.0.1/32"]}}])
    assert {get(lb["dns"], 80)[1] for _ in range(20)} == {"green\n"}


def test_sandbox_rules_take_three_values_per_condition_and_five_per_rule(lb):
    elbv2 = boto3.client("elbv2")
    sources = [f"198.51.100.{n}/32" for n in range(4)]
    header = {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Kiln-Env",
                                                           "Values": ["alice", "bob", "carol"]}}
    for conditions in ([{"Field": "source-ip", "SourceIpConfig": {"Values": sources}}],
                       [header, {"Field": "source-ip",
                                 "SourceIpConfig": {"Values": sources[:3]}}]):
        with pytest.raises(ClientError) as refused:
            elbv2.create_rule(ListenerArn=lb["listener"], Priority=7,
                              Actions=[forward(lb["groups"], green=1)], Conditions=conditions)
        assert refused.value.response["Error"]["Code"] == "ValidationError"
    elbv2.create_rule(ListenerArn=lb["listener"], Priority=7,
                      Actions=[forward(lb["groups"], green=1)],
                      Conditions=[{"Field": "source-ip",
                                   "SourceIpConfig": {"Values": sources[:3]}}])


def test_self_service_rule_names_the_source_ranges(kaws, daws, outputs):
    from tests.deploy_helpers import make_image

    make_image(daws, "1.0.0")
    selfservice.up(kaws, "carol", version="1.0.0", ttl="1h")
    rules = daws.client("elbv2").describe_rules(ListenerArn=outputs["ListenerArn"])["Rules"]
    conditions = [r for r in rules if not r["IsDefault"]][0]["Conditions"]
    source = [c for c in conditions if c["Field"] == "source-ip"]
    assert source[0]["SourceIpConfig"]["Values"] == ["127.0.0.1/32"]  # the sandbox host's /32


def test_self_service_needs_named_source_ranges(kiln_settings):
    with pytest.raises(KilnError, match="self_service.source_cidrs: empty"):
        selfservice.source_cidrs(kiln_settings().deploy)
    many = kiln_settings(deploy={"self_service": {"source_cidrs": [
        f"198.51.100.{n}/32" for n in range(4)]}})
    with pytest.raises(KilnError, match="at most 3"):
        selfservice.source_cidrs(many.deploy)
    with pytest.raises(ConfigError, match="lets anyone reach self-service environments"):
        kiln_settings(deploy={"self_service": {"source_cidrs": ["0.0.0.0/0"]}})
    meant = kiln_settings(deploy={"self_service": {"source_cidrs": ["0.0.0.0/0"],
                                                   "from_anywhere": True}})
    assert selfservice.source_cidrs(meant.deploy) == ["0.0.0.0/0"]


def test_listener_certificate_must_be_an_acm_arn_of_the_deploy_account(kiln_settings, kaws):
    with pytest.raises(ConfigError, match="kiln.deploy.listener.certificate: 'my-cert' is not"):
        kiln_settings(deploy={"listener": {"certificate": "my-cert"}})
    daws = kaws.account("prod")
    admin = admin_of(daws)
    from accounts import bootstrap

    place = bootstrap.Place(daws.settings, "prod", admin, admin, daws.region)
    settings = kiln_settings()
    with pytest.raises(KilnError, match="listener.certificate: not set; the environment in "
                                        r"account prod \(222222222222\) serves HTTPS only"):
        env_stack_module.cluster_parameters(place, settings, "hello-web")
    other = "arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-1111-2222-3333-444455556666"
    settings.deploy.listener["certificate"] = other
    with pytest.raises(KilnError, match=f"{other} is not in account prod"):
        env_stack_module.cluster_parameters(place, settings, "hello-web")
    elsewhere = other.replace("123456789012", "222222222222").replace("us-east-1", "eu-west-1")
    settings.deploy.listener["certificate"] = elsewhere
    with pytest.raises(KilnError, match="own account and region only"):
        env_stack_module.cluster_parameters(place, settings, "hello-web")


def test_bootstrap_creates_the_env_stack_with_the_sandbox_certificate(kaws, daws):
    from accounts import bootstrap
    from cloud.target import connect

    admin = connect(kaws.settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=(env_stack_module.ENV_STACK.part,))
    name = stack_name(daws.settings, "env-hello-web")
    cfn = admin_of(daws).client("cloudformation", daws.region)
    parameters = {p["ParameterKey"]: p["ParameterValue"]
                  for p in cfn.describe_stacks(StackName=name)["Stacks"][0]["Parameters"]}
    assert parameters["CertificateArn"] == kaws.settings.deploy.listener.certificate
    assert ":222222222222:certificate/" in parameters["CertificateArn"]


def before_https() -> str:
    """The environment template as it was before HTTPS: one HTTP listener on port 80."""
    text = TEMPLATE.read_text()
    start, end = text.index("  # After the Listener:"), text.index("  InstanceRole:")
    text = text[:start] + text[end:]
    for new, old in (("      Port: !Ref HttpsPort\n      Protocol: HTTPS\n",
                      "      Port: !Ref HttpPort\n      Protocol: HTTP\n"),
                     ("      SslPolicy: !Ref SslPolicy\n", ""),
                     ("      Certificates: [{CertificateArn: !Ref CertificateArn}]\n", ""),
                     ("  HttpListenerArn:\n    Condition: HasLoadBalancer\n"
                      "    Value: !Ref HttpRedirect\n", ""),
                     ("    AllowedPattern: \"(arn:aws[a-z-]*:(acm|iam):.+)?\"\n", "")):
        assert new in text, new
        text = text.replace(new, old)
    return text


def test_an_environment_made_before_https_is_updated_in_place(kaws, daws):
    """The listener an older environment routed with keeps its ARN (so its rules and weights)
    and moves to HTTPS; the redirect takes over port 80."""
    from accounts import bootstrap

    cfn = admin_of(daws).client("cloudformation", daws.region)
    name = stack_name(daws.settings, "env-hello-web")
    cfn.create_stack(StackName=name, TemplateBody=before_https(),
                     Capabilities=["CAPABILITY_NAMED_IAM"],
                     Parameters=[{"ParameterKey": "AppName", "ParameterValue": "hello-web"}])
    before = {o["OutputKey"]: o["OutputValue"]
              for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]}
    admin = connect(kaws.settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=(env_stack_module.ENV_STACK.part,))
    after = {o["OutputKey"]: o["OutputValue"]
             for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]}
    assert after["ListenerArn"] == before["ListenerArn"]
    elbv2 = daws.client("elbv2")
    listeners = elbv2.describe_listeners(LoadBalancerArn=after["LoadBalancerArn"])["Listeners"]
    assert sorted((x["Port"], x["Protocol"]) for x in listeners) == [(80, "HTTP"),
                                                                     (443, "HTTPS")]
    host = after["LoadBalancerDnsName"]

    def redirected():  # the proxies follow the listeners within a tick
        try:
            assert redirect_of(host, 80, "/") == (301, f"https://{NAME}/")
        except ConnectionRefusedError as error:
            raise AssertionError(error) from None

    until(redirected, timeout=5)


def seen_headers(host: str, headers: dict) -> set[str]:
    connection = http.client.HTTPConnection(host, 80, timeout=10)
    try:
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        response.read()
        return set(response.getheader("X-Seen-Header-Names", "").split(","))
    finally:
        connection.close()


def test_sandbox_drops_invalid_header_fields_when_the_balancer_says_so(lb):
    all_healthy(lb)
    sent = {"X-Good": "1", "X_Under": "1"}
    assert {"X-Good", "X_Under"} <= seen_headers(lb["dns"], sent)
    boto3.client("elbv2").modify_load_balancer_attributes(LoadBalancerArn=lb["arn"], Attributes=[
        {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"}])
    seen = seen_headers(lb["dns"], sent)
    assert "X-Good" in seen and "X_Under" not in seen


def test_env_load_balancer_drops_invalid_header_fields(daws, outputs):
    attributes = daws.client("elbv2").describe_load_balancer_attributes(
        LoadBalancerArn=outputs["LoadBalancerArn"])["Attributes"]
    assert {"Key": "routing.http.drop_invalid_header_fields.enabled",
            "Value": "true"} in attributes
