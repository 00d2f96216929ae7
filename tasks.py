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

# -- the yum repository ---------------------------------------------------------------------


@kiln_task(help={"rpm": "the RPM file to publish",
                 "manifest": "build this manifest first (default: kiln.manifest), then publish",
                 "version": "with --manifest: the version to build",
                 "json": "print the result as JSON on stdout"})
def publish(c, rpm=None, manifest=None, version=None, json=False):
    """Sign an RPM and publish it into the S3 yum repository (metadata updated incrementally)."""
    from cloud.console import emit_json
    from cloud.errors import KilnError
    from cloud.target import connect
    from packager import repo

    config = settings(c)
    if rpm and (manifest or version):
        raise KilnError("publish: give --rpm, or --manifest/--version, not both")
    aws = connect(config)
    if not rpm:
        from packager.build import package as build_package

        rpm = build_package(config, manifest or config.manifest, version)["path"]
    result = repo.publish(aws, rpm)
    if json:
        emit_json(result)


@kiln_task(help={"app": "only this package name", "json": "print baseurl and packages as JSON"})
def repo_list(c, app=None, json=False):
    """List the packages in the yum repository (read from its metadata)."""
    from cloud.console import emit_json
    from cloud.target import connect
    from packager import repo

    aws = connect(settings(c))
    packages = repo.list_packages(aws, app)
    fields = ("name", "epoch", "version", "release", "arch", "sha256", "path")
    if json:
        emit_json({"baseurl": repo.baseurl(aws),
                   "packages": [{k: p[k] for k in fields} for p in packages]})
        return
    say(f"repo: {repo.repo_file_url(aws)}")
    for p in packages:
        print(f"{p['name']}-{p['version']}-{p['release']}.{p['arch']}  {p['sha256']}")


@kiln_task(help={"keep": "versions to keep per package name",
                 "dry_run": "print what would be removed and change nothing",
                 "json": "print the plan as JSON on stdout"})
def repo_prune(c, keep, dry_run=False, json=False):
    """Remove all but the newest KEEP versions of each package from the yum repository."""
    from cloud.console import emit_json
    from cloud.target import connect
    from packager import repo

    plan = repo.prune(connect(settings(c)), int(keep), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for p in plan["remove"]:
        say(f"repo.prune: {verb} {p['name']}-{p['version']}-{p['release']}.{p['arch']}")
    say(f"repo.prune: {len(plan['remove'])} {verb}, {plan['kept']} kept")
    if json:
        emit_json(plan)


ns.add_task(publish)
repo_tasks = Collection("repo")
repo_tasks.add_task(repo_list, "list")
repo_tasks.add_task(repo_prune, "prune")
ns.add_collection(repo_tasks)

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
