"""Kiln: bake immutable AWS machine images and roll them out.

`invoke --list` shows every task; `invoke --help TASK` shows its flags. Settings come from
invoke.yaml (key `kiln`), your own Invoke config files, `-f FILE` and INVOKE_KILN_* variables.
"""

from invoke import Collection

from cloud.console import say
from cloud.tasking import kiln_task, settings
from sandbox.control import Sandbox

# -- sandbox --------------------------------------------------------------------------------


@kiln_task
def sandbox_up(c):
    """Start the sandbox (moto server on loopback) unless it runs already."""
    endpoint = Sandbox.from_settings(settings(c)).up()
    say(f"sandbox: running at {endpoint}")


@kiln_task
def sandbox_down(c):
    """Stop the sandbox; its AWS state is lost."""
    stopped = Sandbox.from_settings(settings(c)).down()
    say("sandbox: stopped" if stopped else "sandbox: was not running")


@kiln_task
def sandbox_reset(c):
    """Clear every resource in the running sandbox, keeping it running."""
    Sandbox.from_settings(settings(c)).reset()
    say("sandbox: reset; run `invoke bootstrap --yes` to recreate the support stacks")


@kiln_task
def sandbox_env(c):
    """Print `export` lines pointing the aws CLI and boto3 at the sandbox (eval them)."""
    for key, value in Sandbox.from_settings(settings(c)).env().items():
        print(f"export {key}={value}")


sandbox = Collection("sandbox")
sandbox.add_task(sandbox_up, "up")
sandbox.add_task(sandbox_down, "down")
sandbox.add_task(sandbox_reset, "reset")
sandbox.add_task(sandbox_env, "env")

ns = Collection()
ns.add_collection(sandbox)

# -- bootstrap ------------------------------------------------------------------------------


@kiln_task(help={"account": "an account name from kiln.accounts, or all (default)",
                 "dry-run": "show the change sets, then delete them; change nothing",
                 "yes": "apply without asking (CI); without it Kiln asks on the terminal",
                 "json": "print one result per stack as JSON on stdout"})
def bootstrap_apply(c, account=None, dry_run=False, yes=False, json=False):
    """Create or update the support stacks (build account, target accounts) via change sets."""
    from cloud import bootstrap as stacks
    from cloud.console import emit_json
    from cloud.target import connect

    config = settings(c)
    results = stacks.run(config, connect(config), account, dry_run=dry_run, yes=yes)
    if json:
        emit_json(results)


@kiln_task(help={"account": "an account name from kiln.accounts, or all (default)",
                 "json": "print the checks as JSON on stdout"})
def bootstrap_verify(c, account=None, json=False):
    """Check the real support resources: public bucket, encryption, key and trust policies…"""
    from cloud import verify
    from cloud.console import emit_json
    from cloud.errors import KilnError
    from cloud.target import connect

    config = settings(c)
    checks = verify.run(config, connect(config), account)
    for check in checks:
        say(f"{'✓' if check.ok else '✗'} [{check.account}] {check.name}")
        for problem in check.problems:
            say(f"    {problem}")
    if json:
        emit_json({"ok": all(ch.ok for ch in checks), "checks": [ch.as_dict() for ch in checks]})
    failed = [ch for ch in checks if not ch.ok]
    if failed:
        count = sum(len(ch.problems) for ch in failed)
        raise KilnError(f"bootstrap.verify: {count} problem(s) in {len(failed)} check(s)")


bootstrap_tasks = Collection("bootstrap")
bootstrap_tasks.add_task(bootstrap_apply, "apply", default=True)
bootstrap_tasks.add_task(bootstrap_verify, "verify")
ns.add_collection(bootstrap_tasks)

# -- packaging ------------------------------------------------------------------------------


@kiln_task(help={"manifest": "the YAML manifest (default: kiln.manifest)",
                 "version": "semantic version, overriding the manifest's",
                 "json": "print the result as JSON on stdout"})
def package(c, manifest=None, version=None, json=False):
    """Build dist/<name>-<version>-<iteration>.<arch>.rpm from a YAML manifest."""
    from cloud.console import emit_json
    from cloud.tasking import pick
    from packager.build import package as build_package

    config = settings(c)
    result = build_package(config, pick(manifest, config.manifest), version)
    if json:
        emit_json(result)
    else:
        say(f"package: {result['nevra']} sha256 {result['sha256']}")


ns.add_task(package)

# -- bake -----------------------------------------------------------------------------------


@kiln_task(help={"version": "the version to bake (semantic version)",
                 "manifest": "the package manifest (default: kiln.manifest)",
                 "regions": "comma-separated regions to copy the image to "
                            "(default: kiln.bake.copy_regions)",
                 "share": "comma-separated account names to share the image with "
                          "(default: kiln.bake.share)",
                 "dry_run": "print the plan and create nothing",
                 "json": "print the release record (or the plan) as JSON on stdout"})
def bake(c, version, manifest=None, regions=None, share=None, dry_run=False, json=False):
    """Bake an AMI for VERSION: package, publish, provision with chef-solo, image, share, copy."""
    from cloud.console import emit_json
    from cloud.target import connect
    from provisioner import bake as baking

    config = settings(c)
    aws = connect(config)
    result = baking.run(aws, config, version, manifest, _names(regions), _names(share),
                        dry_run=dry_run)
    if json:
        emit_json(result)


def _names(text):
    """A comma-separated flag as a list; None (flag not given) stays None."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


ns.add_task(bake)
