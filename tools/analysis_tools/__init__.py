# Copyright (c) mmgem contributors. All rights reserved.
"""Analysis tools: plans, logs, routing heat maps, domain identifiability."""
