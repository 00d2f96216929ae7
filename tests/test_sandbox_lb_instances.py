"""sandbox/aws/elbv2/load_balancers.py: instance targets that are sandbox machines carry traffic."""

from collections import Counter

import boto3

from tests.network_helpers import balancer_groups, get, health, until
from tests.test_sandbox_instances import connect, launch


def test_the_load_balancer_reaches_apps_inside_instances(clean_sandbox):
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    launched = [launch(ec2, key_name=name) for name in ("one", "two")]
    for instance, pem in launched:
        with connect(clean_sandbox, instance, pem) as ssh:
            ssh.run(f"echo {instance['InstanceId']} | sudo -n tee /etc/whoami >/dev/null",
                    hide=True)
            ssh.run("sudo -n setsid python3 -m http.server 8080 --directory /etc >/dev/null "
                    "2>&1 < /dev/null &", hide=True)
    vpc = launched[0][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
    balancer = elbv2.create_load_balancer(
        Name="machines", Subnets=subnets,
        SecurityGroups=balancer_groups(ec2, vpc, 80))["LoadBalancers"][0]
    group = elbv2.create_target_group(
        Name="machines", Protocol="HTTP", Port=8080, VpcId=vpc, HealthCheckPath="/whoami",
        HealthCheckIntervalSeconds=5, HealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group,
                           Targets=[{"Id": i["InstanceId"]} for i, _pem in launched])
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])

    def healthy():
        assert [h["State"] for h in health(group)] == ["healthy", "healthy"]

    until(healthy, timeout=30)
    answers = Counter(get(balancer["DNSName"], 80, "/whoami")[1].strip() for _ in range(20))
    assert answers == {i["InstanceId"]: 10 for i, _pem in launched}
