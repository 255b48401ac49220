
# ---- end of the init.d fragments
trap - EXIT
set +e
echo "dib ramdisk: done"
if [ -n "$TROUBLESHOOT" ]; then
    dib_shell
fi
poweroff -f
