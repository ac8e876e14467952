"""Record, from inside a step's environment, the versions of the packages its env pins."""

import json
import platform

from cartcohort.logs import script_logging
from cartcohort.provenance import env_packages, installed_versions

with script_logging(snakemake):
    pins = env_packages(snakemake.params.env_file)
    versions = installed_versions(pins)
    versions["python"] = platform.python_version()
    with open(snakemake.output[0], "w") as fh:
        json.dump(versions, fh, indent=1, sort_keys=True)
