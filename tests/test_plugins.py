import textwrap

import pytest

import spnkit
from spnkit.core import plugins
from spnkit import cli
from spnkit.builtin.orderings import RasterOrdering


def test_builtins_register_through_hooks():
    registry = plugins.load(autoload=False)
    assert {"raster", "subscale"} <= set(registry.names("ordering"))
    assert {"depth_split", "reduce_bits"} <= set(registry.names("quantizer"))
    assert set(registry.names("conditioner")) == {"class_embedding", "vector", "image_encoder"}
    entry = registry.get("ordering", "subscale")
    assert entry.provider.distribution == "spnkit"
    assert entry.provider.module == "spnkit.builtin.orderings"


class Duplicate:
    @spnkit.hookimpl
    def spnkit_register_orderings(register):
        register("raster", RasterOrdering)


def test_duplicate_names_are_a_hard_error_naming_both_providers():
    with pytest.raises(plugins.PluginError) as info:
        plugins.load(autoload=False, extra=[Duplicate])
    message = str(info.value)
    assert "'raster' is registered twice" in message
    assert "spnkit.builtin.orderings" in message and "in-process" in message


class WrongHook:
    @spnkit.hookimpl
    def spnkit_register_ordering(register):  # typo: unknown hook
        pass


def test_unknown_hook_is_reported():
    with pytest.raises(plugins.PluginError, match="unknown hook"):
        plugins.load(autoload=False, extra=[WrongHook])


def test_unknown_name_suggests_close_matches():
    registry = plugins.load(autoload=False)
    with pytest.raises(plugins.UnknownPluginError) as info:
        registry.get("ordering", "subscal")
    assert "did you mean 'subscale'" in str(info.value)
    assert "available: raster, subscale" in str(info.value)


def _install_fake_distributions(root):
    """Two distributions on sys.path: one whose plugin fails to import, one that works."""
    good = root / "goodplugin.py"
    good.write_text(textwrap.dedent('''
        import spnkit
        from spnkit.builtin.orderings import SubscaleOrdering

        class Backwards(SubscaleOrdering):
            """A test ordering."""

        @spnkit.hookimpl
        def spnkit_register_orderings(register):
            register("backwards", Backwards)
    '''))
    (root / "brokenplugin.py").write_text("import no_such_module_anywhere\n")
    for name, module, version in [("spnkit-good", "goodplugin", "1.2.3"), ("spnkit-broken", "brokenplugin", "0.0.1")]:
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[spnkit]\n{module} = {module}\n")


def test_broken_plugin_warns_and_the_others_still_load(tmp_path, monkeypatch):
    _install_fake_distributions(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="spnkit-broken 0.0.1"):
        registry = plugins.load(autoload=True)
    assert registry.get("ordering", "backwards").provider.distribution == "spnkit-good"
    assert registry.get("ordering", "backwards").provider.version == "1.2.3"
    [failure] = registry.failures
    assert failure.distribution == "spnkit-broken" and "no_such_module_anywhere" in failure.error

    with pytest.raises(plugins.PluginError, match="spnkit-broken 0.0.1"):
        plugins.load(autoload=True, strict=True)


def test_autoload_switch_disables_entry_points(tmp_path, monkeypatch):
    _install_fake_distributions(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.AUTOLOAD_SWITCH, "1")
    registry = plugins.load()
    assert "backwards" not in registry.names("ordering") and not registry.failures


def test_cli_plugins_lists_builtins_and_warns_about_broken(tmp_path, monkeypatch, capsys):
    _install_fake_distributions(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.AUTOLOAD_SWITCH, "0")
    assert cli.main(["plugins"]) == 0
    out, err = capsys.readouterr()
    listed = {tuple(line.split()[:2]) for line in out.splitlines()}
    assert {("ordering", "subscale"), ("quantizer", "depth_split"), ("ordering", "backwards")} <= listed
    assert "spnkit-good" in out and "1.2.3" in out
    assert err.startswith("warning: plugin 'brokenplugin' from spnkit-broken 0.0.1 failed to load")
    assert cli.main(["--strict-plugins", "plugins"]) == 2
    assert capsys.readouterr().err.startswith("error: plugin 'brokenplugin'")
