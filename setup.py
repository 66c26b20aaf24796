# Copyright (c) mmgem contributors. All rights reserved.
from setuptools import find_packages, setup

if __name__ == '__main__':
    setup(packages=find_packages(exclude=('configs', 'tools', 'tests')))
