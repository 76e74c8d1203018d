"""Moved to `appliance.config.web` (issue 10: the configuration schema is one layer below
the roles). An alias until the last importer has moved; then this file goes."""

import sys

from appliance.config import web as _moved

sys.modules[__name__] = _moved
