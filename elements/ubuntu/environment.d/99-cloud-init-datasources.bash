# cloud-init asks only the EC2-style metadata service unless told otherwise
# (as DIB's ubuntu element has it; OpenStack serves it too).
export DIB_CLOUD_INIT_DATASOURCES=${DIB_CLOUD_INIT_DATASOURCES:-Ec2}
