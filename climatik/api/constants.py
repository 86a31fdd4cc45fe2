"""Names of the Climatik API: group, version, kinds, plurals, and the label and finalizer keys it owns."""

from typing import Final

GROUP: Final = "climatik.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

POLICY_KIND: Final = "PowerCappingPolicy"
POLICY_PLURAL: Final = "powercappingpolicies"
POLICY_SHORT_NAME: Final = "pcp"

NODE_FREQUENCIES_KIND: Final = "NodeFrequencies"
NODE_FREQUENCIES_PLURAL: Final = "nodefrequencies"
NODE_FREQUENCIES_SHORT_NAME: Final = "nf"

DOMAIN_KIND: Final = "PowerDomain"
DOMAIN_PLURAL: Final = "powerdomains"
DOMAIN_SHORT_NAME: Final = "pd"

#: Set by the recommender on every policy so that its NodeFrequencies entries are removed before the policy goes.
POLICY_FINALIZER: Final = f"{GROUP}/node-frequencies"

#: Default distance, in percent of the limit, between the capping threshold and the release level (hysteresis).
DEFAULT_RELEASE_BAND: Final = 5

#: Name of the built-in closed-loop algorithm used when a policy lists no custom algorithm.
DEFAULT_ALGORITHM: Final = "closed-loop"
