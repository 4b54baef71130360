"""The installed package's C++ side: headers, the CMake config and the
library it points at, and one version everywhere. (Building and running C++
programs against them: tests/cpp_package/run.sh, part of scripts/test.sh.)"""
import os
import re


import myconv

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(myconv VERSION ([0-9.]+)", f.read()).group(1)


def test_one_version_everywhere():
    assert myconv.__version__ == project_version()


def test_the_package_carries_headers_and_a_cmake_config_for_its_library():
    config_dir = os.path.join(myconv.cmake_prefix_path, "myconv")
    config = open(os.path.join(config_dir, "myconvConfig.cmake")).read()
    assert "find_dependency(Torch)" in config and "--no-as-needed" in config
    version = open(os.path.join(config_dir, "myconvConfigVersion.cmake")).read()
    assert f'set(PACKAGE_VERSION "{myconv.__version__}")' in version
    assert os.path.isfile(os.path.join(config_dir, "myconvTorchHints.cmake"))
    # the config's library, relative to it, is the library this package loaded
    relative = re.search(r'set\(myconv_LIBRARY "\$\{_myconv_prefix\}/([^"]+)"\)', config).group(1)
    prefix = os.path.abspath(os.path.join(config_dir, "..", "..", ".."))
    assert os.path.samefile(os.path.join(prefix, relative), myconv.library_path())
    # the headers, as in the sources
    source_headers = os.path.join(ROOT, "csrc", "include", "myconv")
    assert sorted(os.listdir(os.path.join(prefix, "include", "myconv"))) == sorted(os.listdir(source_headers))
    for header in os.listdir(source_headers):
        with open(os.path.join(prefix, "include", "myconv", header)) as a, \
                open(os.path.join(source_headers, header)) as b:
            assert a.read() == b.read(), f"{header} differs from csrc/include/myconv/{header}: rebuild"
    # every template value filled in
    assert not re.search(r"@[A-Z_]+@", config + version)
