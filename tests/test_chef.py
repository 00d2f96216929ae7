"""The kiln_app cookbook and what Kiln generates for chef-solo.

Quick checks with plain Ruby: `ruby -c` on every Ruby file, ERB templates compiled and rendered,
the helper library run against a generated node.json, and the cookbook's structure (run list,
recipes, templates, attributes) cross-checked with what provisioner.chef writes. Real chef-solo
runs of every recipe are in test_cookbook.py.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cloud.errors import KilnError
from provisioner import chef

ROOT = Path(__file__).resolve().parent.parent
CHEF = ROOT / "chef"
COOKBOOK = CHEF / "cookbooks" / "kiln_app"


def ruby(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ruby", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


def sample_node(**overrides) -> dict:
    values = {"app": "hello-web", "version": "2.0.0-rc.1", "release": "3",
              "package": "hello-web", "service": "hello-web",
              "repo_baseurl": "https://repo.example.com/el9/x86_64",
              "gpgkey_url": "https://repo.example.com/el9/x86_64/RPM-GPG-KEY-kiln",
              "gpgkey_fingerprint": FINGERPRINT,
              "smoke_commands": ["curl -fsS http://127.0.0.1:8080/health"]}
    values.update(overrides)
    return chef.node_json(**values)


# -- the cookbook ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(CHEF.rglob("*.rb")), ids=lambda p: str(p.relative_to(CHEF)))
def test_every_ruby_file_parses(path):
    result = ruby("-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stdout


@pytest.mark.parametrize("path", sorted(CHEF.rglob("*.erb")), ids=lambda p: p.name)
def test_every_template_compiles(path):
    script = "require 'erb'; puts ERB.new(File.read(ARGV[0]), trim_mode: '-').src"
    source = ruby("-e", script, str(path))
    assert source.returncode == 0, source.stderr
    check = ruby("-c", stdin=source.stdout)
    assert check.returncode == 0, check.stderr


def test_metadata_names_the_cookbook_of_the_run_list():
    metadata = (COOKBOOK / "metadata.rb").read_text()
    assert re.search(r"^name 'kiln_app'$", metadata, re.M)
    assert re.search(r"^version '\d+\.\d+\.\d+'$", metadata, re.M)
    assert chef.RUN_LIST == ["recipe[kiln_app]"]
    assert (COOKBOOK / "recipes" / "default.rb").is_file()


def recipe_sources() -> dict[str, str]:
    return {p.stem: p.read_text() for p in (COOKBOOK / "recipes").glob("*.rb")}


def test_included_recipes_and_templates_exist():
    recipes = recipe_sources()
    included = re.findall(r"include_recipe '([^']+)'", recipes["default"])
    assert included == ["kiln_app::repo", "kiln_app::install", "kiln_app::service",
                        "kiln_app::smoke"]
    for name in included:
        assert name.split("::")[1] in recipes, name
    templates = re.findall(r"source '([^']+\.erb)'", "\n".join(recipes.values()))
    assert templates, "the cookbook renders at least one template"
    for name in templates:
        assert (COOKBOOK / "templates" / name).is_file(), name


def test_repo_recipe_checks_both_signatures_and_install_pins_the_version():
    recipes = recipe_sources()
    repo = recipes["repo"]
    assert "yum_repository repo_id do" in repo
    for attribute in ("baseurl", "gpgkey", "gpgcheck", "repo_gpgcheck"):
        assert re.search(rf"^\s+{attribute} ", repo, re.M), attribute
    assert re.search(r"version \"#\{pkg\[:version\]\}-#\{pkg\[:release\]\}\"", recipes["install"])
    assert "action [:enable, :start]" in recipes["service"]
    assert "command check" in recipes["smoke"]


def test_every_attribute_the_recipes_require_is_in_node_json():
    node = sample_node()["kiln_app"]
    required = re.findall(r"kiln_required\(([^)]*)\)", "\n".join(recipe_sources().values()))
    assert required
    for call in required:
        path = re.findall(r"'([^']+)'", call)
        value = node
        for key in path:
            value = value[key]
        assert value, path


def test_helper_library_reads_the_generated_node_json(tmp_path):
    """libraries/helpers.rb, run by Ruby against node.json with a minimal stand-in for Chef."""
    node_file = tmp_path / "node.json"
    node_file.write_text(json.dumps(sample_node()))
    script = """
      require 'json'
      module Chef; module DSL; class Recipe; end; end; end
      load ARGV[0]
      class Probe
        include KilnApp::Helpers
        def initialize(node) = @node = node
        attr_reader :node
      end
      probe = Probe.new(JSON.parse(File.read(ARGV[1])))
      result = probe.kiln_package.merge(baseurl: probe.kiln_required('repo', 'baseurl'))
      begin
        Probe.new({ 'kiln_app' => { 'repo' => {} } }).kiln_required('repo', 'baseurl')
      rescue RuntimeError => e
        result[:missing] = e.message
      end
      puts result.to_json
    """
    result = ruby("-e", script, str(COOKBOOK / "libraries" / "helpers.rb"), str(node_file))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "name": "hello-web", "version": "2.0.0~rc.1", "release": "3",
        "baseurl": "https://repo.example.com/el9/x86_64",
        "missing": "kiln_app: node['kiln_app']['repo']['baseurl'] is not set in node.json"}


def test_release_template_renders_valid_json():
    script = """
      require 'erb'; require 'json'
      @app, @version, @release = 'hello-web', '1.4.2', '1'
      @package, @service, @repo = 'hello-web-1.4.2-1', nil, "https://r/\\"x\\""
      puts ERB.new(File.read(ARGV[0]), trim_mode: '-').result(binding)
    """
    result = ruby("-e", script, str(COOKBOOK / "templates" / "release.json.erb"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "app": "hello-web", "version": "1.4.2", "release": "1", "package": "hello-web-1.4.2-1",
        "service": None, "repo": 'https://r/"x"', "baked_by": "kiln"}


# -- node.json ---------------------------------------------------------------------------------

def test_node_json_has_the_agreed_shape():
    assert sample_node() == {
        "run_list": ["recipe[kiln_app]"],
        "kiln_app": {
            "name": "hello-web",
            "version": "2.0.0-rc.1",
            "release": "3",
            "package": "hello-web-2.0.0~rc.1-3",
            "service": "hello-web",
            "repo": {"id": "kiln", "name": "Kiln hello-web",
                     "baseurl": "https://repo.example.com/el9/x86_64",
                     "gpgkey": "https://repo.example.com/el9/x86_64/RPM-GPG-KEY-kiln",
                     "gpgkey_fingerprint": FINGERPRINT, "gpgcheck": True, "repo_gpgcheck": True},
            "smoke": {"commands": ["curl -fsS http://127.0.0.1:8080/health"]},
        },
    }


def test_node_json_without_service_and_with_explicit_rpm_version():
    node = sample_node(service=None, version="1.4.2", release="1", rpm_version="1.4.2")
    assert node["kiln_app"]["service"] is None
    assert node["kiln_app"]["package"] == "hello-web-1.4.2-1"
    assert json.loads(json.dumps(node)) == node


def test_node_json_refuses_missing_values():
    with pytest.raises(KilnError, match="node.json: repo_baseurl is empty"):
        sample_node(repo_baseurl="")


@pytest.mark.parametrize(("semver", "rpm"), [
    ("1.4.2", "1.4.2"), ("2.0.0-rc.1", "2.0.0~rc.1"),
    ("1.0.0-beta.2+build.7", "1.0.0~beta.2+build.7"),
])
def test_rpm_version(semver, rpm):
    assert chef.to_rpm_version(semver) == rpm


def test_smoke_commands_fill_placeholders_and_name_bad_ones():
    filled = chef.smoke_commands(
        ["curl -fsS localhost/health | grep -F '{version}'", "awk '{{print $1}}' /etc/{app}"],
        app="hello-web", version="1.4.2", release="1", package="hello-web", service=None)
    assert filled == ["curl -fsS localhost/health | grep -F '1.4.2'",
                      "awk '{print $1}' /etc/hello-web"]
    with pytest.raises(KilnError, match=r"kiln.bake.smoke_commands: .*bad placeholder 'port'"):
        chef.smoke_commands(["curl localhost:{port}"], app="a", version="1")


# -- solo.rb -----------------------------------------------------------------------------------

def evaluate_solo_rb(text: str, tmp_path: Path) -> dict:
    """solo.rb evaluated by Ruby the way Chef's config loader does (instance_eval), recorded."""
    path = tmp_path / "solo.rb"
    path.write_text(text)
    script = """
      require 'json'
      class Recorder < BasicObject
        STDOUT = ::STDOUT
        def initialize(seen) = @seen = seen
        def method_missing(name, value) = @seen[name] = value
      end
      seen = {}
      Recorder.new(seen).instance_eval(File.read(ARGV[0]), ARGV[0], 1)
      puts seen.transform_values { |v| v.is_a?(IO) ? 'STDOUT' : v }.to_json
    """
    result = ruby("-e", script, str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_solo_rb_points_everything_under_the_staging_dir(tmp_path):
    text = chef.solo_rb("/home/ec2-user/kiln-bake")
    assert ruby("-c", stdin=text).returncode == 0
    assert evaluate_solo_rb(text, tmp_path) == {
        "chef_repo_path": "/home/ec2-user/kiln-bake",
        "cookbook_path": ["/home/ec2-user/kiln-bake/cookbooks"],
        "file_cache_path": "/home/ec2-user/kiln-bake/cache",
        "file_backup_path": "/home/ec2-user/kiln-bake/backup",
        "json_attribs": "/home/ec2-user/kiln-bake/node.json",
        "node_path": "/home/ec2-user/kiln-bake/nodes",
        "chef_license": "accept-no-persist",
        "log_location": "STDOUT",
        "log_level": "info",
        "enable_reporting": False,
    }


def test_solo_rb_escapes_quotes_backslashes_and_interpolation(tmp_path):
    odd = "/home/o'brien/#{`touch pwned`}\\x/"
    values = evaluate_solo_rb(chef.solo_rb(odd), tmp_path)
    assert values["json_attribs"] == "/home/o'brien/#{`touch pwned`}\\x/node.json"
    assert not (tmp_path / "pwned").exists()


def test_solo_rb_needs_an_absolute_staging_dir():
    with pytest.raises(KilnError, match="must be absolute"):
        chef.solo_rb("kiln-bake")


# -- the cookbook digest and archive -----------------------------------------------------------

def test_cookbook_digest_is_stable_and_follows_every_change(tmp_path):
    copy = tmp_path / "chef"
    shutil.copytree(CHEF, copy)
    digest = chef.cookbook_digest(CHEF)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert chef.cookbook_digest(copy) == digest == chef.cookbook_digest(CHEF)

    (copy / "cookbooks" / "kiln_app" / ".DS_Store").write_bytes(b"junk")
    assert chef.cookbook_digest(copy) == digest, "editor and OS junk is not part of it"

    recipe = copy / "cookbooks" / "kiln_app" / "recipes" / "smoke.rb"
    recipe.write_text(recipe.read_text() + "\n")
    changed = chef.cookbook_digest(copy)
    assert changed != digest

    recipe.rename(recipe.with_name("smoke_checks.rb"))
    assert chef.cookbook_digest(copy) not in (digest, changed), "a rename changes it too"


def test_cookbook_digest_of_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(KilnError, match="the chef folder does not exist"):
        chef.cookbook_digest(tmp_path / "nope")


def test_cookbook_archive_is_reproducible_and_carries_node_json_and_solo_rb():
    extra = {"node.json": b"{}", "solo.rb": b"# solo"}
    archive = chef.cookbook_archive(CHEF, extra)
    assert archive == chef.cookbook_archive(CHEF, extra)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        assert tar.extractfile("solo.rb").read() == b"# solo"
    assert "cookbooks/kiln_app/metadata.rb" in names
    assert "node.json" in names
    assert names == sorted(names[:-2]) + ["node.json", "solo.rb"]


def test_key_fingerprints_are_read_from_the_served_key(tmp_path):
    """The cookbook trusts the bucket's key file only as exactly the pinned key: the helper it
    uses, run by Ruby on a real key file, lists each primary key's fingerprint."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home)]
    for name in ("One <one@example.invalid>", "Two <two@example.invalid>"):
        subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", name, "ed25519", "sign",
                        "never"], check=True, capture_output=True)
    listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True,
                             capture_output=True, text=True).stdout
    expected = [line.split(":")[9] for previous, line in
                zip(listing.splitlines(), listing.splitlines()[1:], strict=False)
                if previous.startswith("pub:") and line.startswith("fpr:")]
    key = tmp_path / "RPM-GPG-KEY-kiln"
    key.write_bytes(subprocess.run([*gpg, "--armor", "--export"], check=True,
                                   capture_output=True).stdout)
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={"GNUPGHOME": str(home)},
                   check=False, capture_output=True)
    script = """
      require 'json'
      require 'open3'
      module Chef; module DSL; class Recipe; end; end; end
      load ARGV[0]
      class Probe
        include KilnApp::Helpers
        Result = Struct.new(:stdout)
        def shell_out!(*args)
          out, status = Open3.capture2(*args)
          raise 'gpg failed' unless status.success?
          Result.new(out)
        end
      end
      puts Probe.new.kiln_key_fingerprints(ARGV[1]).to_json
    """
    result = ruby("-e", script, str(COOKBOOK / "libraries" / "helpers.rb"), str(key))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected and len(expected) == 2
