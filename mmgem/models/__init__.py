# Copyright (c) mmgem contributors. All rights reserved.
