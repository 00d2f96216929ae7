"""Every IAM policy document in Kiln's CloudFormation templates, as JSON an outside judge reads:
role trust and inline policies, managed policies, bucket policies and KMS key policies. The
templates' intrinsic functions are resolved to example values of the right shape (an ARN of the
referenced resource's type, the parameter's name for a parameter)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cfnlint.decode import cfn_yaml

ACCOUNT, REGION = "123456789012", "us-east-1"
PSEUDO = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
          "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "kiln-example",
          "AWS::NoValue": None}
ARN_OF = {  # an example ARN per resource type a policy may name
    "AWS::S3::Bucket": "arn:aws:s3:::{id}",
    "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{{id}}",
    "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{{id}}",
    "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{{id}}",
    "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{{id}}",
    "AWS::EC2::VPCEndpoint": "vpce-0123456789abcdef0",
    "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{{id}}",
    "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{{id}}",
    "AWS::CodePipeline::Pipeline": "{id}",  # a pipeline's Ref is its name
}
EXAMPLES = [  # parameter name pattern → an example value of its shape
    (r"SecretParameterArns$", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app/db-password"),
    (r"SecretArns$", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:app/token-??????"),
    (r"AccountIds?$", "210987654321"), (r"Roots?$", "arn:aws:iam::210987654321:root"),
    (r"(Users|Principals?|Arns?)$", "arn:aws:iam::210987654321:role/kiln-deployer"),
    (r"Cidrs?$", "203.0.113.0/24"), (r"(Vpces?|Endpoints?)$", "vpce-0123456789abcdef0"),
]


def documents(template: Path) -> list[tuple[str, str, dict]]:
    """(resource logical id, which document, the document) of each policy in `template`."""
    body = json.loads(json.dumps(cfn_yaml.load(str(template))))  # plain dicts and strings
    resources = body.get("Resources", {})
    resolve = _Resolver(resources, body.get("Parameters", {})).value
    found = []
    for name, resource in resources.items():
        kind, props = resource.get("Type"), resource.get("Properties", {})
        if kind == "AWS::IAM::Role":
            found.append((name, "trust", props.get("AssumeRolePolicyDocument")))
            found += [(name, p.get("PolicyName"), p.get("PolicyDocument"))
                      for p in props.get("Policies", [])]
        elif kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::S3::BucketPolicy"):
            found.append((name, "policy", props.get("PolicyDocument")))
        elif kind == "AWS::KMS::Key":
            found.append((name, "key policy", props.get("KeyPolicy")))
    return [(name, which, resolve(document)) for name, which, document in found if document]


class _Resolver:
    def __init__(self, resources: dict, parameters: dict):
        self.resources, self.parameters = resources, parameters

    def value(self, node):
        if isinstance(node, dict):
            if len(node) == 1:
                (key, arg), = node.items()
                if key == "Ref":
                    return self.ref(arg)
                if key == "Fn::Sub":
                    return self.sub(arg)
                if key == "Fn::GetAtt":
                    return self.get_att(arg)
                if key == "Fn::If":
                    return self.value(arg[1])
                if key == "Fn::Split":
                    return str(self.value(arg[1])).split(arg[0])
                if key == "Fn::Join":
                    return arg[0].join(str(self.value(v)) for v in arg[1])
            return {k: self.value(v) for k, v in node.items()
                    if self.value(v) is not None or not isinstance(v, dict)}
        if isinstance(node, list):
            values = [self.value(v) for v in node]
            return [v for item in values for v in (item if isinstance(item, list) else [item])]
        return node

    def ref(self, name: str):
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.resources:
            return self.arn(name)
        default = self.parameters.get(name, {}).get("Default")
        if default not in (None, ""):
            return default
        for pattern, example in EXAMPLES:
            if re.search(pattern, name):
                return example
        return f"example-{name.lower()}"

    def get_att(self, arg) -> str:
        name = arg[0] if isinstance(arg, list) else str(arg).split(".")[0]
        return self.arn(name)

    def arn(self, name: str) -> str:
        kind = self.resources[name].get("Type")
        return ARN_OF.get(kind, f"arn:aws:example:{REGION}:{ACCOUNT}:{{id}}").format(
            id=name.lower())

    def sub(self, arg) -> str:
        text, extra = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(
            self.value(extra[m[1]]) if m[1] in extra else self.ref(m[1].split(".")[0])
            if "." not in m[1] else self.get_att(m[1])), text)


def as_json(document: dict) -> str:
    return json.dumps(document, default=str)
