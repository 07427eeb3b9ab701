"""The controller process: os-ken glue, the gRPC API, sync with switches, services."""

import warnings

# dnspython (imported by eventlet, which os-ken imports) touches cryptography's deprecated DSA names at
# import: 16 lines of CryptographyDeprecationWarning at every start that say nothing about this program
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"dns\.")
