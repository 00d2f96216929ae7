"""Kiln: bake immutable AWS machine images and roll them out.

`invoke --list` shows every task; `invoke --help TASK` shows its flags. Settings come from
invoke.yaml (key `kiln`), your own Invoke config files, `-f FILE` and INVOKE_KILN_* variables.
"""

from invoke import Collection

from cloud.console import say
from cloud.tasking import check_runtime_file, kiln_task, settings

check_runtime_file()

# Only what defining the tasks needs is imported here: every `invoke` run imports this file, so
# a module-level boto3 import would add its start-up to `invoke package` and `invoke --list`.
# Task bodies import what they use.


def _extensions(config=None):
    """The parts other modules add to bootstrap and janitor: imported by the tasks that run them;
    with the settings, the environment stacks of every app's clusters too."""
    import orchestrator.stack  # adds kiln-env-<app> to `invoke bootstrap`
    import orchestrator.sweeper  # noqa: F401 - adds expired self-service envs to `invoke janitor`
    import packager.sweeper  # noqa: F401 - adds unlisted package objects to `invoke janitor`

    if config is not None:
        orchestrator.stack.register_clusters(config)
        import orchestrator.codepipeline  # adds kiln-pipeline-<app> for apps on CodePipeline

        orchestrator.codepipeline.register(config)


# -- sandbox --------------------------------------------------------------------------------


def _sandbox(c):
    from sandbox.control import Sandbox

    return Sandbox.from_settings(settings(c))


@kiln_task
def sandbox_up(c):
    """Start the sandbox (moto server on loopback) unless it runs already."""
    endpoint = _sandbox(c).up()
    say(f"sandbox: running at {endpoint}")


@kiln_task
def sandbox_down(c):
    """Stop the sandbox; its AWS state is kept for the next `sandbox.up` (docs/sandbox.md)."""
    stopped = _sandbox(c).down()
    say("sandbox: stopped" if stopped else "sandbox: was not running")


@kiln_task
def sandbox_reset(c):
    """Clear every resource in the running sandbox, keeping it running."""
    _sandbox(c).reset()
    say("sandbox: reset; run `invoke bootstrap --yes` to recreate the support stacks")


@kiln_task(help={"account": "an account name from kiln.accounts: its role's credentials "
                            "(default: the build account's)",
                 "admin": "the sandbox admin's keys (what `invoke bootstrap` uses) instead of "
                          "the operator's"})
def sandbox_env(c, account=None, admin=False):
    """Print `export` lines pointing the aws CLI and boto3 at the sandbox (eval them)."""
    import shlex

    values = _sandbox(c).env("admin" if admin else "operator")
    config = settings(c)
    if account and config.target != "sandbox":
        from cloud.errors import KilnError

        raise KilnError(f"sandbox.env --account {account}: kiln.target is {config.target}; the "
                        f"sandbox's accounts are only the sandbox target's")
    if account and account != config.build_account:
        from cloud.target import connect

        # The credentials of the account's role, as Kiln assumes it (kiln.accounts.<name>).
        frozen = connect(config, read_only=True).account(account).session.get_credentials(
        ).get_frozen_credentials()
        values.update({"AWS_ACCESS_KEY_ID": frozen.access_key,
                       "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
                       "AWS_SESSION_TOKEN": frozen.token})
    for key, value in values.items():
        print(f"export {key}={shlex.quote(value)}")


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
    from accounts import bootstrap as stacks
    from cloud.console import emit_json
    from cloud.target import connect

    config = settings(c)
    _extensions(config)
    results = stacks.run(config, connect(config, admin=True), account, dry_run=dry_run,
                         yes=yes)
    if json:
        emit_json(results)


@kiln_task(help={"account": "an account name from kiln.accounts, or all (default)",
                 "json": "print the checks as JSON on stdout"})
def bootstrap_verify(c, account=None, json=False):
    """Check the real support resources: public bucket, encryption, key and trust policies…"""
    from accounts import verify
    from cloud.console import emit_json
    from cloud.errors import KilnError
    from cloud.target import connect

    config = settings(c)
    _extensions(config)
    checks = verify.run(config, connect(config, admin=True), account)
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


@kiln_task(help={"manifest": "the YAML manifest (default: the app's, kiln.manifest for kiln.app)",
                 "app": "package this app's manifest (kiln.apps.<app>.manifest)",
                 "version": "semantic version, overriding the manifest's",
                 "iteration": "the package iteration (RPM release), overriding the manifest's",
                 "json": "print the result as JSON on stdout"})
def package(c, manifest=None, app=None, version=None, iteration=None, json=False):
    """Build dist/<name>-<version>-<iteration>.<arch>.rpm from a YAML manifest."""
    from cloud.console import emit_json
    from cloud.tasking import pick
    from packager.build import package as build_package

    config = _app_settings(c, app)
    result = build_package(config, pick(manifest, config.manifest), version, iteration)
    if json:
        emit_json(result)
    else:
        say(f"package: {result['nevra']} sha256 {result['sha256']}")


ns.add_task(package)

# -- the yum repository ---------------------------------------------------------------------


@kiln_task(help={"rpm": "the RPM file to publish",
                 "manifest": "build this manifest first (default: kiln.manifest), then publish",
                 "version": "the version to build from the manifest (default: the manifest's)",
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

    aws = connect(settings(c), read_only=True)
    packages = repo.list_packages(aws, app)
    fields = ("name", "epoch", "version", "release", "arch", "sha256", "path")
    if json:
        emit_json({"baseurl": repo.baseurl(aws),
                   "packages": [{k: p[k] for k in fields} for p in packages]})
        return
    say(f"repo: {repo.repo_file_url(aws)}")
    for p in packages:
        print(f"{p['name']}-{p['version']}-{p['release']}.{p['arch']}  {p['sha256']}")


@kiln_task(required=("keep",), help={"keep": "versions to keep per package name (required)",
                 "dry_run": "print what would be removed and change nothing",
                 "json": "print the plan as JSON on stdout"})
def repo_prune(c, keep=None, dry_run=False, json=False):
    """Remove all but the newest KEEP versions of each package from the yum repository."""
    from cloud.console import emit_json
    from cloud.target import connect
    from cloud.tasking import whole
    from packager import repo

    plan = repo.prune(connect(settings(c)), whole(keep, "--keep", 1), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for p in plan["remove"]:
        say(f"repo.prune: {verb} {p['name']}-{p['version']}-{p['release']}.{p['arch']}")
    say(f"repo.prune: {len(plan['remove'])} {verb}, {plan['kept']} kept")
    if json:
        emit_json(plan)


@kiln_task(help={"dry_run": "only check: report a signature that does not match, put "
                            "nothing back; with --repair, print the repair plan only",
                 "repair": "put back a lost, older or refused repomd.xml from the bucket's "
                           "versions or the package objects (its plan printed first)",
                 "json": "print the result as JSON on stdout"})
def repo_verify(c, dry_run=False, repair=False, json=False):
    """Check the yum repository as dnf reads it (repomd.xml the one Kiln last wrote, signed by
    the repo key, every file it names present); put back the signature a stopped publish or
    prune left unmatched. A lost, older or refused repomd.xml fails it; --repair puts it back."""
    from cloud.console import emit_json
    from cloud.target import connect
    from packager import repo

    result = repo.verify(connect(settings(c)), dry_run=dry_run, repair=repair)
    if json:
        emit_json(result)


ns.add_task(publish)
repo_tasks = Collection("repo")
repo_tasks.add_task(repo_list, "list")
repo_tasks.add_task(repo_prune, "prune")
repo_tasks.add_task(repo_verify, "verify")
ns.add_collection(repo_tasks)

# -- bake -----------------------------------------------------------------------------------


@kiln_task(help={
                 "version": "the version to bake (semantic version; required but with "
                            "--behind-foundation)",
                 "manifest": "the package manifest (default: the app's, kiln.manifest for "
                             "kiln.app)",
                 "app": "bake this app (its manifest and bake settings: kiln.apps.<app>)",
                 "foundation": "bake this foundation image (kiln.foundations.<name>: a run "
                               "list of its own, no app) and point its SSM parameter at it",
                 "behind_foundation": "rebake every app whose newest image is on an older "
                                      "image of this foundation (the plan first; --dry-run "
                                      "shows it only)",
                 "iteration": "the package iteration (RPM release), overriding the manifest's: "
                              "a new one when the repo holds this version built from other "
                              "files",
                 "regions": "comma-separated regions to copy the image to "
                            "(default: kiln.bake.copy_regions)",
                 "share": "comma-separated account names to share the image with "
                          "(default: kiln.bake.share)",
                 "dry_run": "print the plan and create nothing",
                 "json": "print the release record (or the plan) as JSON on stdout"})
def bake(c, version=None, manifest=None, app=None, foundation=None, behind_foundation=None,
         iteration=None, regions=None, share=None, dry_run=False, json=False):
    """Bake an AMI for VERSION: package, publish, provision with chef-solo, image, share, copy.
    With --foundation, a foundation image; with --behind-foundation, the apps behind one."""
    from cloud.console import emit_json
    from cloud.target import connect
    from provisioner import bake as baking

    config = _bake_settings(c, version, app, foundation, behind_foundation, manifest, iteration)
    aws = connect(config)
    if behind_foundation:
        from provisioner import behind

        result = behind.run(aws, behind_foundation, dry_run=dry_run)
    else:
        result = baking.run(aws, config, version, manifest, _names(regions), _names(share),
                            dry_run=dry_run, iteration=iteration, foundation=foundation)
    if json:
        emit_json(result)


def _bake_settings(c, version, app, foundation, behind_foundation, manifest, iteration):
    """The settings `invoke bake` runs with, its flags checked against each other."""
    from cloud.errors import Refused  # bad flags: exit code 4
    from cloud.foundations import for_foundation

    given = [f for f, v in (("--app", app), ("--foundation", foundation),
                            ("--behind-foundation", behind_foundation)) if v]
    if len(given) > 1:
        raise Refused(f"bake: give one of {', '.join(given)}")
    if behind_foundation:
        if version or manifest or iteration:
            raise Refused("bake --behind-foundation: each app is rebaked at the release of "
                            "its newest image; --version, --manifest and --iteration do not "
                            "apply")
        return settings(c)
    if not version:
        raise Refused("bake: --version is required (invoke --help bake)")
    if foundation:
        if manifest or iteration:
            raise Refused("bake --foundation: a foundation has no package; --manifest and "
                            "--iteration do not apply")
        return for_foundation(settings(c), foundation)
    return _app_settings(c, app)


def _names(text):
    """A comma-separated flag as a list; None (flag not given) stays None."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


ns.add_task(bake)

# -- images: promotion, retention, leftovers -----------------------------------------------


@kiln_task(required=("version", "to"), help={
    "version": "the baked release to promote: version-release (2.4.0-2) or a version (its "
               "newest release); required",
    "to": "the account name (kiln.accounts) that gets its own copy, e.g. prod (required)",
                 "app": "the app (default: kiln.app)",
                 "json": "print the promotions as JSON on stdout"})
def ami_promote(c, version=None, to=None, app=None, json=False):
    """Copy VERSION's image into account TO (re-encrypted, re-tagged) and record it in SSM."""
    from cloud.console import emit_json
    from cloud.target import connect
    from cloud.tasking import pick
    from provisioner import promote

    config = settings(c)
    result = promote.promote(connect(config), pick(app, config.app), version, to)
    if json:
        emit_json(result)


@kiln_task(help={"keep": "images to keep per account and region (default: kiln.ami.keep)",
                 "app": "the app (default: kiln.app)",
                 "foundation": "prune this foundation's images instead of an app's",
                 "dry_run": "print what would be removed and change nothing",
                 "json": "print the plan as JSON on stdout"})
def ami_prune(c, keep=None, app=None, foundation=None, dry_run=False, json=False):
    """Deregister all but the newest KEEP images of an app (or a foundation) and their
    snapshots; never one in use or named by the parameter a deploy or bake reads."""
    from cloud import foundations
    from cloud.console import emit_json
    from cloud.target import connect
    from cloud.tasking import pick, whole
    from provisioner import images

    config = settings(c)
    keep = whole(pick(keep, config.ami.keep), "--keep", 1)
    if foundation:
        foundations.for_foundation(config, foundation)  # a known name, or one clear line
    label = foundations.app_label(foundation) if foundation else pick(app, config.app)
    result = images.prune(connect(config), label, keep, dry_run=dry_run)
    if json:
        emit_json(result)


@kiln_task(help={"dry_run": "list the leftovers and remove nothing",
                 "json": "print the leftovers as JSON on stdout"})
def janitor(c, dry_run=False, json=False):
    """Remove what interrupted runs left: bake resources of dead, finished or expired runs, orphan
    snapshots, package objects no repo metadata lists. A run is dead once its bake lease is
    released, lapsed (a minute after a kill -9 on another host) or held by a process gone from
    this host (at once); a live run is waited for. A package object a killed publish uploaded but
    never listed goes once older than kiln.repo.unlisted_grace_seconds (1 h; a live publish lists
    its own sooner), under the repo lease, never while a publish or prune holds it."""
    from cloud.console import emit_json
    from cloud.errors import KilnError
    from cloud.target import connect
    from provisioner import janitor as sweeping

    _extensions()
    result = sweeping.run(connect(settings(c)), dry_run=dry_run)
    if json:
        emit_json(result)
    if result.get("failures"):
        first = result["failures"][0]
        raise KilnError(f"janitor: {len(result['failures'])} place(s) failed, the others were "
                        f"swept; first: {first['account']}, {first['region']}: {first['error']}")


ami_tasks = Collection("ami")
ami_tasks.add_task(ami_promote, "promote")
ami_tasks.add_task(ami_prune, "prune")
ns.add_collection(ami_tasks)
ns.add_task(janitor)

# -- deploy ---------------------------------------------------------------------------------

_DEPLOY_HELP = {
    "app": "the app (default: kiln.app; others under kiln.apps)",
    "stack": "the cluster's stack: the cluster is app-stack (default: kiln.deploy.stack)",
    "dry_run": "print the plan (steps, capacities, weights) and change nothing",
    "force_unlock": "take over the cluster's lock even from a live lease (a holder on another "
                    "host known to be gone); expired leases are taken over anyway",
    "json": "print the result (plan, outcome, api_calls, server groups) as JSON on stdout",
    "watch": "how long to watch the alarms after each shift, e.g. 5m; 0 skips "
             "(default: kiln.deploy.watch)",
    "steps": "traffic percentages for the new group, e.g. 25,50,100 (default: kiln.deploy.steps)",
    "version": "the baked release to roll out: version-release (2.4.0-2) or a version (its "
               "newest release)",
    "ami": "an AMI id to roll out instead of a version",
    "reason": "why, in the release history (`invoke history`) beside who, when and the outcome",
    "allow_failed": "roll out a release its gate rolled back before in this cluster (refused "
                    "without it; recorded in the history)",
}


def _help(*names, **extra):
    """The flag help of a deploy task: the shared texts for `names`, plus its own."""
    return {**{name: _DEPLOY_HELP[name] for name in names}, **extra}


def _app_settings(c, app, stack=None):
    """The settings of `--app` (kiln.apps.<app> over the defaults), or of kiln.app; with
    `stack`, that stack's deploy settings over those."""
    from cloud.apps import for_app

    return for_app(settings(c), app, stack)


def _stack_settings(c, app, stack):
    """The settings of `--app` in `--stack` (default: the app's kiln.deploy.stack)."""
    from cloud.tasking import pick

    return _app_settings(c, app, pick(stack, _app_settings(c, app).deploy.stack))


def _rollout(c, operation, json, app=None, **kwargs):
    """Run one deploy operation; a rollback still prints its JSON, then fails the task."""
    from cloud.console import emit_json
    from cloud.target import connect
    from cloud.tasking import pick
    from orchestrator import operations

    config = _stack_settings(c, app, kwargs.get("stack"))
    kwargs["stack"] = pick(kwargs.get("stack"), config.deploy.stack)
    try:
        result = getattr(operations, operation)(connect(config), **kwargs)
    except operations.RolledBack as failure:
        if json:
            emit_json(failure.result)
        raise
    if json:
        emit_json(result)
    return result


@kiln_task(help=_help("app", "version", "ami", "steps", "watch", "stack", "dry_run",
                      "force_unlock", "json", "reason", "allow_failed"))
def deploy(c, version=None, ami=None, app=None, steps=None, watch=None, stack=None,
           dry_run=False, force_unlock=False, json=False, reason=None, allow_failed=False):
    """Roll VERSION out as a new server group: first deployment, or a full red/black."""
    _rollout(c, "deploy", json, app=app, version=version, ami=ami, steps=steps, watch=watch,
             stack=stack, dry_run=dry_run, force_unlock=force_unlock, reason=reason,
             allow_failed=allow_failed)


@kiln_task(help=_help("app", "version", "ami", "watch", "stack", "dry_run", "force_unlock",
                      "json", "reason", "allow_failed",
                      percent="the canary's share of traffic, 1-99 (default: "
                              "kiln.deploy.canary.percent)"))
def canary(c, percent=None, version=None, ami=None, app=None, watch=None, stack=None,
           dry_run=False, force_unlock=False, json=False, reason=None, allow_failed=False):
    """Start a canary: a new server group taking PERCENT of the traffic, watched by alarms."""
    from cloud.tasking import pick

    percent = pick(percent, _stack_settings(c, app, stack).deploy.canary.percent)
    _rollout(c, "canary", json, app=app, percent=percent, version=version, ami=ami, watch=watch,
             stack=stack, dry_run=dry_run, force_unlock=force_unlock, reason=reason,
             allow_failed=allow_failed)


@kiln_task(help=_help("app", "steps", "watch", "stack", "dry_run", "force_unlock", "json",
                      "reason"))
def promote(c, app=None, steps=None, watch=None, stack=None, dry_run=False, force_unlock=False,
            json=False, reason=None):
    """Promote the canary: full capacity, shift traffic step by step, disable the old group."""
    _rollout(c, "promote", json, app=app, steps=steps, watch=watch, stack=stack, dry_run=dry_run,
             force_unlock=force_unlock, reason=reason)


@kiln_task(help=_help("app", "stack", "dry_run", "force_unlock", "json", "reason"))
def rollback(c, app=None, stack=None, dry_run=False, force_unlock=False, json=False,
             reason=None):
    """Back to the group the serving one replaced: canary out, or that group back at capacity."""
    _rollout(c, "rollback", json, app=app, stack=stack, dry_run=dry_run,
             force_unlock=force_unlock, reason=reason)


@kiln_task(help=_help("app", "stack", "dry_run", "force_unlock", "json", "reason",
                      keep="disabled groups to keep for rollback (default: kiln.deploy.keep)"))
def teardown(c, keep=None, app=None, stack=None, dry_run=False, force_unlock=False, json=False,
             reason=None):
    """Delete failed and rolled-back groups, then disabled ones beyond the most recent KEEP."""
    from cloud.tasking import pick, whole

    keep = whole(pick(keep, _stack_settings(c, app, stack).deploy.keep), "--keep")
    _rollout(c, "teardown", json, app=app, keep=keep, stack=stack, dry_run=dry_run,
             force_unlock=force_unlock, reason=reason)


@kiln_task(help={"app": "only this app's clusters (default: every app's)",
                 "stack": "only this stack's cluster (default: every cluster of the app)",
                 "json": "print the clusters as JSON: {clusters: [{cluster, server_groups}]}, "
                         "the first one's keys also at the top"})
def status(c, app=None, stack=None, json=False):
    """Show the clusters' server groups: release, AMI, capacity, health, weight, age, state;
    and the apps whose newest image is behind their foundation's newest image."""
    from cloud import foundations
    from cloud.console import emit_json
    from cloud.target import connect
    from orchestrator import operations

    config = settings(c)
    aws = connect(config, read_only=True)
    result = operations.status_all(aws, app, stack)
    # Apps on a foundation: is each one's newest image on the foundation's newest image?
    result["foundations"] = foundations.behind(aws, only=app, strict=False)
    if json:
        emit_json(result)
    else:
        for entry in result["clusters"]:
            for line in operations.status_lines(entry):
                print(line)
        for line in foundations.lines(result["foundations"]):
            print(line)


@kiln_task(required=("owner",), help={"owner": "whose environment it is (lowercase name; required)",
                 "app": _DEPLOY_HELP["app"],
                 "ttl": "how long it lives, e.g. 4h (default: kiln.deploy.self_service.ttl)",
                 "version": "the version to run (default: the one the app's cluster serves)",
                 "ami": "an AMI id to run instead of a version",
                 "dry_run": "print what would be created and change nothing",
                 "json": "print the result as JSON on stdout"})
def env_up(c, owner=None, app=None, ttl=None, version=None, ami=None, dry_run=False,
           json=False):
    """Start a one-instance environment of a version for OWNER, removed when its TTL ends;
    reached only from kiln.deploy.self_service.source_cidrs."""
    from cloud.console import emit_json
    from cloud.target import connect
    from orchestrator import selfservice

    result = selfservice.up(connect(_app_settings(c, app)), owner, ttl, version, ami,
                            dry_run=dry_run)
    if json:
        emit_json(result)


@kiln_task(required=("owner",), help={"owner": "whose environment to remove (required)",
                 "app": _DEPLOY_HELP["app"],
                 "dry_run": "print what would be deleted and change nothing",
                 "json": "print the result as JSON on stdout"})
def env_down(c, owner=None, app=None, dry_run=False, json=False):
    """Remove OWNER's self-service environment."""
    from cloud.console import emit_json
    from cloud.target import connect
    from orchestrator import selfservice

    result = selfservice.down(connect(_app_settings(c, app)), owner, dry_run=dry_run)
    if json:
        emit_json(result)


@kiln_task(help={"app": "only this app (default: every app: kiln.app and kiln.apps)",
                 "limit": "the newest LIMIT events per app (default: all)",
                 "json": "print the events as JSON on stdout"})
def history(c, app=None, limit=None, json=False):
    """Who deployed, rolled out, promoted, rolled back or tore down what, when, why, and how it
    ended: read from the release history in AWS (the build account's history table)."""
    from cloud import apps
    from cloud import history as ledger
    from cloud.console import emit_json
    from cloud.target import connect
    from cloud.tasking import whole

    config = settings(c)
    aws = connect(config, read_only=True)
    names = [apps.for_app(config, app).app] if app else apps.names(config)
    count = None if limit is None else whole(limit, "--limit", 1)
    events = [e for name in names for e in ledger.read(aws, f"app/{name}", limit=count)]
    events.sort(key=lambda e: e["At"], reverse=True)
    if json:
        emit_json({"events": events})
        return
    for line in ledger.lines(events):
        print(line)


for _task in (deploy, canary, promote, rollback, teardown, status, history):
    ns.add_task(_task)
env_tasks = Collection("env")
env_tasks.add_task(env_up, "up")
env_tasks.add_task(env_down, "down")
ns.add_collection(env_tasks)

# -- the release pipeline -------------------------------------------------------------------


@kiln_task(required=("version",), help={
    "app": _DEPLOY_HELP["app"] + "; its pipeline is kiln.apps.<app>.pipeline",
    "version": "the release to take through the pipeline (required): version-release, or a "
               "version (the app manifest's release: what the commit stage packages)",
    "from": "start at this stage (the stages before it must have passed for the version)",
    "to": "stop after this stage",
    "stage": "run this one stage (--from STAGE --to STAGE): what a CI job per stage runs",
    "dry_run": "print each stage, what it has recorded for the version and what would run",
    "override": "run a stage whose earlier stages have not passed (the override is recorded)",
    "json": "print the stages' outcomes as JSON on stdout"})
def pipeline_run(c, version=None, app=None, from_=None, to=None, stage=None, dry_run=False,
                 override=False, json=False):
    """Take VERSION through the app's pipeline: each stage in order, gated on the ones before
    it, its outcome recorded in AWS (release history, image tag); see docs/pipeline.md."""
    from cloud.console import emit_json
    from cloud.errors import Refused
    from cloud.target import connect
    from orchestrator import pipeline

    if stage is not None:
        if from_ is not None or to is not None:
            raise Refused("pipeline.run: give --stage, or --from/--to, not both")
        from_ = to = stage
    aws = connect(_app_settings(c, app))
    result = pipeline.run(aws, version, from_, to, dry_run=dry_run, override=override)
    if json:
        emit_json(result)


def _decide(c, approved, app, version, comment, override, json, stage=None):
    from cloud.console import emit_json
    from cloud.target import connect
    from orchestrator import pipeline

    aws = connect(_app_settings(c, app))
    result = pipeline.decide(aws, version, approved, comment, override, stage)
    if json:
        emit_json(result)


_DECIDE_HELP = {"app": _DEPLOY_HELP["app"],
                "version": "the release (required): version-release, or a version (the app "
                           "manifest's release)",
                "stage": "the manual stage (approval or exploratory) to decide (default: the "
                         "first one without a decision)",
                "comment": "why, recorded with your identity",
                "override": "even though earlier stages have not passed (recorded)",
                "json": "print the decision as JSON on stdout"}


@kiln_task(required=("version",), help=_DECIDE_HELP)
def pipeline_approve(c, version=None, app=None, comment=None, override=False, json=False,
                     stage=None):
    """Approve VERSION at the pipeline's approval (or exploratory) stage, as you (your ARN is
    recorded)."""
    _decide(c, True, app, version, comment, override, json, stage)


@kiln_task(required=("version",), help=_DECIDE_HELP)
def pipeline_reject(c, version=None, app=None, comment=None, override=False, json=False,
                    stage=None):
    """Reject VERSION at the pipeline's approval (or exploratory) stage: the stages after it
    refuse it."""
    _decide(c, False, app, version, comment, override, json, stage)


@kiln_task(help={"app": _DEPLOY_HELP["app"],
                 "version": "the version whose recorded stages to show when the pipeline runs "
                            "locally (default: the newest in the app's history)",
                 "json": "print the status as JSON on stdout"})
def pipeline_status(c, app=None, version=None, json=False):
    """The app's pipeline: its executions on CodePipeline when the stack kiln-pipeline-<app>
    exists (stage by stage, the newest executions), else the stages the release history
    records for a version."""
    from cloud.console import emit_json
    from cloud.target import connect
    from orchestrator import codepipeline, pipeline

    aws = connect(_app_settings(c, app), read_only=True)
    result = codepipeline.status(aws)
    if result is None:
        result = pipeline.status(aws, version)
    if json:
        emit_json(result)


@kiln_task(help={"app": _DEPLOY_HELP["app"],
                 "json": "print the uploaded object (bucket, key, version) as JSON on stdout"})
def pipeline_push(c, app=None, json=False):
    """Upload this checkout to the app's CodePipeline S3 source: its tracked files and the
    wheels of its lock, from which the builds install Kiln (docs/pipeline-engines.md)."""
    from pathlib import Path

    from cloud.console import emit_json
    from cloud.target import connect
    from orchestrator import codepipeline

    settings = _app_settings(c, app)
    aws = connect(settings)
    result = codepipeline.push(aws, settings.app, Path(__file__).resolve().parent)
    if json:
        emit_json(result)


@kiln_task(help={"app": _DEPLOY_HELP["app"],
                 "import": "in a signing stage's build: import the key from the secret into "
                           "kiln.repo.gpg_home (the pipeline's buildspec runs it)",
                 "dry_run": "say which key would be put in which secret, and put nothing",
                 "json": "print the secret and the key's fingerprint as JSON on stdout"})
def pipeline_key(c, app=None, import_=False, dry_run=False, json=False):
    """Put the repository's signing key (kiln.repo.gpg_key) into the secret of the app's
    CodePipeline stack, from which the builds that publish sign (docs/pipeline-engines.md)."""
    from cloud.console import emit_json
    from cloud.target import connect
    from orchestrator import pipeline_key

    settings = _app_settings(c, app)
    aws = connect(settings)
    if import_:
        result = pipeline_key.import_key(aws, settings.app)
    else:
        result = pipeline_key.put(aws, settings.app, dry_run=dry_run)
    if json:
        emit_json(result)


pipeline_tasks = Collection("pipeline")
pipeline_tasks.add_task(pipeline_run, "run")
pipeline_tasks.add_task(pipeline_status, "status")
pipeline_tasks.add_task(pipeline_push, "push")
pipeline_tasks.add_task(pipeline_key, "key")
pipeline_tasks.add_task(pipeline_approve, "approve")
pipeline_tasks.add_task(pipeline_reject, "reject")
ns.add_collection(pipeline_tasks)

# -- quick start ----------------------------------------------------------------------------


@kiln_task(help={"version": "the example app's version to bake and roll out (default 1.0.0)"})
def demo(c, version="1.0.0"):
    """The quick start: bootstrap the sandbox, bake the example app, promote it, deploy it,
    then request it through its load balancer."""
    sandbox_up(c)
    bootstrap_apply(c, yes=True)
    bake(c, version=version)
    ami_promote(c, version=version, to="prod")
    deploy(c, version=version, watch="0")
    status(c)
    _request_app(c)


def _request_app(c) -> None:
    """GET / of the app through its sandbox load balancer (TLS checked against the sandbox's
    CA) and print the answer, with the curl command that asks the same."""
    from cloud.target import connect
    from orchestrator import operations
    from sandbox.network import client

    config = settings(c)
    url = operations.status(connect(config, read_only=True))["url"]
    state_dir = config.sandbox.state_dir
    say(f"$ {client.command(state_dir, url, config.app)}")
    code, body = client.get(state_dir, url, config.app)
    print(f"{code} {body.rstrip()}")


ns.add_task(demo)
