"""The janitor's sweeper for package objects that killed publishes left in the repository.

A publish uploads its package before it takes the repo lease and lists the package in
repomd.xml; killed in between, the object stays, listed by nothing. The janitor removes such
objects in the build account's main region once older than `kiln.repo.unlisted_grace_seconds`
(a live publish lists its upload within `kiln.repo.lock_timeout`), and only under the repo lease,
so a publish at work is never raced. Importing this module registers it
(cloud.sweepers).
"""

from cloud import locks, stacks, sweepers
from cloud.console import say
from cloud.errors import KilnError
from packager import repo


def find(place, region: str, why) -> list[sweepers.Leftover]:
    settings = place.settings
    if place.account_name != settings.build_account or region != settings.aws.region:
        return []
    target = _repo(place)
    if target is None:
        return []
    grace = settings.repo.unlisted_grace_seconds
    unlisted = target.unlisted_packages()
    young = [href for href, age in unlisted.items() if age < grace]
    if young:
        say(f"janitor: leaving {len(young)} package object(s) no metadata lists yet in "
            f"{target.where()}: younger than kiln.repo.unlisted_grace_seconds ({grace} s), a "
            f"publish may still list them")
    return [sweepers.Leftover("package", href, place.account_name, region,
                             f"listed by no metadata of {target.where()} for {age:.0f} s "
                             f"(a killed publish's upload)")
            for href, age in sorted(unlisted.items()) if age >= grace]


def remove(place, region: str, items: list[sweepers.Leftover]) -> None:
    target = repo.Repo.of(place)
    try:
        gone = target.sweep_unlisted([item.id for item in items])
    except locks.LockHeld as error:
        say(f"janitor: leaving the package objects in {target.where()}: the repo lease is held "
            f"({error}); run the janitor again once it is released")
        return
    for href in sorted({item.id for item in items} - set(gone)):
        say(f"janitor: kept {href}: it is listed now (a publish finished it)")


def _repo(place) -> repo.Repo | None:
    """The repository, or None (said why) before `invoke bootstrap` made its bucket."""
    try:
        if not place.settings.repo.bucket:
            stacks.output(place, "build", "RepoBucket")
        return repo.Repo.of(place)
    except KilnError as error:
        say(f"janitor: package objects not checked: {error}")
        return None


SWEEPER = sweepers.register(sweepers.Sweeper("package", 60, find, remove))
